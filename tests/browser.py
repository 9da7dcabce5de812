"""A real headless Chromium for the status-page tests (Debian's ``chromium``, installed by
deploy/ensure-debian-packages.sh), and what the tests read from it: the DOM it built
(``--dump-dom``) and the colours of a screenshot (the PNG decoded here with zlib)."""

from __future__ import annotations

import shutil
import struct
import subprocess
import urllib.error
import urllib.request
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest

__all__ = [
    "CHROMIUM",
    "IMG_SEAL",
    "SCRIPT_SEAL",
    "Dom",
    "assert_attacks_are_text",
    "dump_dom",
    "get",
    "needs_chromium",
    "png_pixels",
    "screenshot",
]

CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Debian's chromium is not installed (deploy/ensure-debian-packages.sh installs it)",
)

SCRIPT_SEAL = "<script>alert(1)</script>"
IMG_SEAL = '"><img src=x onerror=alert(2)>'


def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Headless Chromium; as root it needs --no-sandbox (its sandbox refuses root)."""
    assert CHROMIUM is not None
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-dev-shm-usage", f"--user-data-dir={profile}", *args],
        capture_output=True, timeout=180, check=False,
    )  # fmt: skip


def dump_dom(profile: Path, url: str) -> str:
    result = chromium(profile, "--dump-dom", url)
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    return result.stdout.decode("utf-8")


def screenshot(profile: Path, url: str, out: Path) -> tuple[int, int, set[bytes]]:
    result = chromium(profile, f"--screenshot={out}", "--window-size=1024,768", url)
    assert result.returncode == 0 and out.exists(), result.stderr.decode(errors="replace")[-2000:]
    return png_pixels(out.read_bytes())


def png_pixels(data: bytes) -> tuple[int, int, set[bytes]]:
    """Width, height and the distinct pixel values of an 8-bit RGB/RGBA PNG (RFC 2083)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, b""
    width = height = bpp = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour in (2, 6), (depth, colour)
            bpp = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
    raw = zlib.decompress(idat)
    stride = width * bpp
    prev = bytearray(stride)
    pixels: set[bytes] = set()
    for y in range(height):
        start = y * (stride + 1)
        ftype, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):  # RFC 2083 §6 filters
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            if ftype == 1:
                line[i] = (line[i] + a) & 0xFF
            elif ftype == 2:
                line[i] = (line[i] + b) & 0xFF
            elif ftype == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif ftype == 4:
                c = prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                line[i] = (line[i] + pred) & 0xFF
        pixels.update(bytes(line[x : x + 3]) for x in range(0, stride, bpp))
        prev = line
    return width, height, pixels


class Dom(HTMLParser):
    """Every element Chromium serialised, and the text of each table's cells by table id."""

    def __init__(self, markup: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.cells: dict[str, list[list[str]]] = {}
        self.ids: set[str] = set()
        self._table: str | None = None
        self._cell: list[str] | None = None
        self.feed(markup)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        if a.get("id"):
            self.ids.add(str(a["id"]))
        if tag == "table":
            self._table = a.get("id")
            self.cells[str(self._table)] = []
        elif tag == "tr" and self._table is not None:
            self.cells[self._table].append([])
        elif tag == "td" and self._table is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None and self._table is not None:
            self.cells[self._table][-1].append("".join(self._cell))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def rows(self, table_id: str) -> list[list[str]]:
        return [r for r in self.cells.get(table_id, []) if r]  # header rows have no <td>

    def elements(self, tag: str) -> list[dict[str, str | None]]:
        return [a for t, a in self.tags if t == tag]


def assert_attacks_are_text(dom: Dom, table_id: str) -> None:
    """The hostile seals are in the table as text; no element came out of them."""
    cells = [c for row in dom.rows(table_id) for c in row]
    assert any(SCRIPT_SEAL in c for c in cells), cells
    assert any(IMG_SEAL in c for c in cells), cells
    assert dom.elements("script") == []  # the pages have no script of their own either
    assert dom.elements("img") == []
    assert not any("onerror" in a for _, a in dom.tags)


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - our own test server
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())
