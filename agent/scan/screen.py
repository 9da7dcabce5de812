"""Laying a console screen out on a small terminal: pure functions, no I/O.

A handheld at a bagging station is read at arm's length, in gloves, dust and sun glare
(DOMAIN.md "Bagging, sealing, tagging"), so the outcome of a scan is one word drawn in
big block letters across the screen, on a green (OK), red (ERROR) or yellow (warning)
background when colour is allowed. The layout never emits a line wider than the
terminal: the big word is drawn at the largest horizontal scale that fits, falls back to
one centred line when the screen is too narrow or too short, and text lines are wrapped
and cut to the width.

Rows, top to bottom: a status line (lot, bags today), the banner (5 rows when the screen
has at least ``BIG_BANNER_MIN_ROWS`` rows, else 1), the message lines, a hint line
(commands), and the input line (``> ``) where the operator's typing is echoed.
"""

from __future__ import annotations

import textwrap
import unicodedata
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["FONT", "Kind", "Screen", "big_word", "layout", "visible_width"]

BIG_BANNER_MIN_ROWS = 12  # status + 5 banner + 4 message lines + hint + input
MAX_SCALE = 4  # horizontal stretch of the 3x5 font: "OK" fills a handheld's width


class Kind(StrEnum):
    OK = "ok"
    ERROR = "error"
    WARN = "warn"
    INFO = "info"
    PROMPT = "prompt"


# Background colours (ECMA-48 SGR): black on green, white on red, black on yellow,
# white on blue. Chosen for contrast in glare rather than for taste.
_SGR = {
    Kind.OK: "\x1b[1;30;42m",
    Kind.ERROR: "\x1b[1;97;41m",
    Kind.WARN: "\x1b[1;30;43m",
    Kind.INFO: "\x1b[1;97;44m",
    Kind.PROMPT: "\x1b[1;97;44m",
}
_REVERSE = "\x1b[7m"
_RESET = "\x1b[0m"

# A 3x5 bitmap font ('#' = ink), enough for every banner word of the catalogues.
_GLYPHS = """
A .#. #.# ### #.# #.#
B ##. #.# ##. #.# ##.
C .## #.. #.. #.. .##
D ##. #.# #.# #.# ##.
E ### #.. ##. #.. ###
F ### #.. ##. #.. #..
G .## #.. #.# #.# .##
H #.# #.# ### #.# #.#
I ### .#. .#. .#. ###
J ..# ..# ..# #.# .#.
K #.# #.# ##. #.# #.#
L #.. #.. #.. #.. ###
M #.# ### ### #.# #.#
N ##. #.# #.# #.# #.#
O .#. #.# #.# #.# .#.
P ##. #.# ##. #.. #..
Q .#. #.# #.# ##. .##
R ##. #.# ##. #.# #.#
S .## #.. .#. ..# ##.
T ### .#. .#. .#. .#.
U #.# #.# #.# #.# ###
V #.# #.# #.# #.# .#.
W #.# #.# ### ### #.#
X #.# #.# .#. #.# #.#
Y #.# #.# .#. .#. .#.
Z ### ..# .#. #.. ###
0 ### #.# #.# #.# ###
1 .#. ##. .#. .#. ###
2 ##. ..# .#. #.. ###
3 ##. ..# .#. ..# ##.
4 #.# #.# ### ..# ..#
5 ### #.. ##. ..# ##.
6 .## #.. ### #.# ###
7 ### ..# .#. .#. .#.
8 ### #.# ### #.# ###
9 ### #.# ### ..# ##.
! .#. .#. .#. ... .#.
? ##. ..# .#. ... .#.
- ... ... ### ... ...
"""
FONT: dict[str, tuple[str, ...]] = {
    line[0]: tuple(line[2:].split()) for line in _GLYPHS.strip().splitlines()
}
FONT[" "] = ("...",) * 5


@dataclass(frozen=True, slots=True)
class Screen:
    """What the console shows; ``layout`` turns it into terminal lines."""

    status: str
    banner: str | None = None  # one word for the big letters
    kind: Kind = Kind.PROMPT
    lines: tuple[str, ...] = ()
    hint: str = ""
    bell: int = 0  # terminal bells to ring when this screen is first shown
    extra: tuple[str, ...] = field(default=())  # live lines (scale reading) under ``lines``


def _fold(word: str) -> str:
    """Upper-case ASCII for the big font: accents dropped ("ANNULÉ" -> "ANNULE")."""
    plain = unicodedata.normalize("NFKD", word).encode("ascii", "ignore").decode("ascii")
    return "".join(c for c in plain.upper() if c in FONT)


def big_word(word: str, width: int, ink: str = "#") -> list[str] | None:
    """``word`` in 5 rows of block letters at the largest scale fitting ``width``; else None."""
    text = _fold(word)
    if not text:
        return None
    for scale in range(MAX_SCALE, 0, -1):
        gap = scale
        total = len(text) * 3 * scale + (len(text) - 1) * gap
        if total <= width:
            break
    else:
        return None
    rows = []
    for r in range(5):
        parts = ["".join((ink if px == "#" else " ") * scale for px in FONT[c][r]) for c in text]
        rows.append((" " * gap).join(parts).center(width).rstrip())
    return rows


def visible_width(line: str) -> int:
    """Columns a line takes on the terminal, ignoring SGR escape sequences."""
    out, i = 0, 0
    while i < len(line):
        if line[i] == "\x1b":
            end = line.find("m", i)
            i = len(line) if end < 0 else end + 1
            continue
        ch = line[i]
        if unicodedata.combining(ch):
            pass
        elif unicodedata.east_asian_width(ch) in ("W", "F"):
            out += 2
        elif ch.isprintable():
            out += 1
        i += 1
    return out


def _cut(text: str, width: int) -> str:
    """``text`` cut to ``width`` columns (with '~' marking the cut)."""
    if visible_width(text) <= width:
        return text
    out = ""
    for ch in text:
        if visible_width(out + ch) > width - 1:
            break
        out += ch
    return out + "~"


def _wrap(lines: tuple[str, ...], width: int) -> list[str]:
    out: list[str] = []
    for line in lines:
        pieces = textwrap.wrap(line, width, break_long_words=True, break_on_hyphens=False)
        out.extend(pieces or [""])
    return [_cut(p, width) for p in out]


def layout(
    screen: Screen, width: int, height: int, *, colour: bool = False, unicode: bool = True
) -> list[str]:
    """Exactly ``height - 1`` lines (the last terminal row is the input line), none wider
    than ``width`` columns. SGR colour codes are added only when ``colour`` is true."""
    width = max(width, 8)
    rows = max(height - 1, 3)
    sgr = _SGR[screen.kind] if colour else ""
    reset = _RESET if colour else ""
    status = _cut(screen.status, width)
    out = [(_REVERSE + status.ljust(width) + _RESET) if colour else status]
    body = _wrap(screen.lines + screen.extra, width)
    hint = _cut(screen.hint, width) if screen.hint else ""
    free = rows - len(out) - (1 if hint else 0)
    if screen.banner:
        big = big_word(screen.banner, width, "█" if unicode else "#")
        if big is not None and height >= BIG_BANNER_MIN_ROWS and free - 5 >= 1:
            for row in big:
                out.append(sgr + row.ljust(width) + reset if colour else row)
        else:
            word = _cut(f"*** {_fold(screen.banner) or screen.banner} ***", width)
            out.append(sgr + word.center(width) + reset if colour else word.center(width).rstrip())
    free = rows - len(out) - (1 if hint else 0)
    out.extend(body[: max(free, 0)])
    out.extend([""] * (rows - len(out) - (1 if hint else 0)))
    if hint:
        out.append(hint)
    return out[:rows]
