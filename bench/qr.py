"""Seal-code decoding: decode rate and time per image on real photographs.

Runs ``firmware_bridge.camera.decode_file`` over the zxing-cpp sample folders
vendored in ``tests/data/conformance/images`` (Apache-2.0; see the README
beside it) and reports, per folder:

- ``decoded`` / ``total`` / ``rate``: images whose expected text (``N.txt``,
  read byte-exact with ``newline=""``) is among the codes read.
- ``other_reads``: codes read that are not the expected text, by image. Some are
  genuine second codes (a QR nested in a QR); a misread shows up here too.
- ``ms_per_image``: median (and max) wall time of one ``decode_file`` call,
  each image timed ``--runs`` times and its median kept. Includes reading the
  file; one thread.
- ``found_by``: which pass of the default pipeline read each decoded image,
  i.e. what each pass contributes in its place in the order.
- ``reference``: what zxing-cpp reads by its own test thresholds (upright),
  from the shared conformance README. The ``qrcode-2`` and ``qrcode-4`` folders here
  hold half of those sets, so compare rates, not counts.

``falsepositives-1`` holds images with no code: any read there is a false
positive. Unreadable images (the degenerate ``1x1.webp``) are listed as errors.
``--per-pass`` also runs every registered pass alone over every image: the
measurement behind the order of ``DEFAULT_PASSES``. ``--compare`` also runs the
default pipeline, zxing-cpp alone and the zbar/OpenCV passes alone, one line each.

Recorded figures (zxing-cpp 3.1.1, OpenCV 5.1.0, libzbar 0.23.92, CPython 3.11,
2-core AMD EPYC shared with other jobs, load average about 6; ``--runs 3``, three
interleaved rounds, the middle round's median quoted; the QR photographs are
the 82 with an expected text in qrcode-1..5, false positives are images of
falsepositives-1 with any read):

===========================================  ========  ========  ===  =============
pipeline                                     QR        Code 128  FP   median ms/img
===========================================  ========  ========  ===  =============
zbar + OpenCV passes with finder-rectified   77/82     5/6       0    26.0 (7.39 on
(the default before zxing-cpp)                                         a quiet machine)
zxing-cpp alone                              76/82     6/6       0    1.8
zxing-cpp first, then the zbar/OpenCV        79/82     6/6       0    2.7
passes (the default now)
===========================================  ========  ========  ===  =============

zxing-cpp first reads #940.png and high-res-1.jpg (qrcode-2) that no zbar or
OpenCV pass read, and Code 128 6.png (FNC4, which libzbar lacks); the zbar and
OpenCV passes after it add qrcode-2/12.webp and qrcode-4/06.webp, 08.webp. With
zxing-cpp first the hand-written finder-pattern rectification read nothing more
(79/82 without it too), so it was removed. An image with no code still runs
every pass: median about 210-370 ms here on falsepositives-1, against
330-380 ms before.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.machine import machine
from firmware_bridge import camera
from firmware_bridge.errors import CameraError

__all__ = ["REFERENCE", "SUMMARY", "add_arguments", "render", "run"]

SUMMARY = "QR / Code 128 decode rate and ms per image on the zxing-cpp sample photographs"

DEFAULT_IMAGES = Path(__file__).resolve().parents[1] / "tests" / "data" / "conformance" / "images"
FALSE_POSITIVES = "falsepositives-1"
# zxing-cpp's own thresholds, upright (the shared conformance README): (read, set size).
REFERENCE: dict[str, tuple[int, int]] = {
    "qrcode-1": (8, 8),
    "qrcode-2": (53, 56),
    "qrcode-3": (18, 18),
    "qrcode-4": (15, 24),
    "qrcode-5": (16, 16),
}
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--images",
        type=Path,
        default=DEFAULT_IMAGES,
        help=f"folder of image sets (default {DEFAULT_IMAGES})",
    )
    parser.add_argument(
        "--runs", type=_positive, default=3, help="timed decodes per image; median kept (3)"
    )
    parser.add_argument(
        "--passes",
        type=_pass_list,
        default=camera.DEFAULT_PASSES,
        help="comma-separated decode passes, in order (default: the library's DEFAULT_PASSES)",
    )
    parser.add_argument(
        "--collect-first",
        type=int,
        default=camera.DEFAULT_COLLECT_FIRST,
        help="passes that always run before the first read stops the search "
        f"(default {camera.DEFAULT_COLLECT_FIRST})",
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help="also run the default pipeline, zxing-cpp alone and the zbar/OpenCV passes "
        "alone, and print one line each (slower)",
    )
    parser.add_argument(
        "--per-pass",
        action="store_true",
        help="also run each registered pass alone over every image (slower)",
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    root: Path = args.images
    if not root.is_dir():
        raise SystemExit(f"image folder {root} not found (see --images)")
    passes: tuple[str, ...] = tuple(args.passes)
    sets = _image_sets(root)
    folders, all_ms, errors = _measure(root, sets, passes, args.collect_first, args.runs)
    result: dict[str, Any] = {
        "benchmark": "qr",
        "folders": folders,
        **_totals(folders, all_ms),
        "unreadable": errors,
        "meets_reference": {
            name: folders[name]["rate"] >= round(ref[0] / ref[1], 4)
            for name, ref in REFERENCE.items()
            if name in folders
        },
        "parameters": {
            "images": str(root),
            "source_commit": _read_text(root / "SOURCE_COMMIT"),
            "passes": list(passes),
            "collect_first": args.collect_first,
            "runs": args.runs,
            "symbologies": list(camera.DEFAULT_SYMBOLOGIES),
        },
        "machine": {**machine(), **camera.library_versions()},
    }
    if args.per_pass:
        result["per_pass"] = _per_pass(root, sets)
    if args.compare:
        rows = []
        for label, compared, first in _comparisons():
            measured, ms, _ = _measure(root, sets, compared, first, args.runs)
            rows.append(
                {
                    "label": label,
                    "passes": list(compared),
                    "collect_first": first,
                    **_totals(measured, ms),
                }
            )
        result["compare"] = rows
    return result


def render(result: Mapping[str, Any]) -> str:
    header = f"{'folder':<18}{'decoded':>9}{'rate':>8}{'zxing-cpp':>11}{'ms/img':>8}{'max ms':>8}"
    lines = [f"{header}  found by"]
    for name, f in result["folders"].items():
        ms = f"{f['ms_per_image']['median']:.1f}"
        mx = f"{f['ms_per_image']['max']:.0f}"
        if name == FALSE_POSITIVES:
            fp = f"{f['false_positives']} FP / {f['readable']}"
            lines.append(f"{name:<18}{fp:>17}{'':>11}{ms:>8}{mx:>8}")
            continue
        if not f.get("total"):
            lines.append(f"{name:<18}{'no .txt: not scored':>28}{ms:>8}{mx:>8}")
            continue
        ref = f.get("reference")
        ref_text = f"{ref['rate'] * 100:.1f}%" if ref else "-"
        found = ", ".join(f"{k} {v}" for k, v in f["found_by"].items())
        lines.append(
            f"{name:<18}{f['decoded']:>4}/{f['total']:<4}{f['rate'] * 100:>7.1f}%{ref_text:>11}"
            f"{ms:>8}{mx:>8}  {found}"
        )
    lines.append("")
    lines.append(
        f"QR total {result['qr_decoded']}/{result['qr_total']} ({result['qr_rate'] * 100:.1f}%), "
        f"false positives {result['false_positives']}, "
        f"median {result['ms_per_image_median']} ms/image (max {result['ms_per_image_max']})"
    )
    for name, f in result["folders"].items():
        if f.get("misses"):
            lines.append(f"  {name} not read: {', '.join(f['misses'])}")
        for image, texts in f.get("other_reads", {}).items():
            shown = "; ".join(repr(t[:40]) for t in texts)
            lines.append(f"  {name}/{image} also read: {shown}")
    for e in result["unreadable"]:
        lines.append(f"  unreadable: {e['image']}: {e['error']}")
    if "per_pass" in result:
        lines.append("")
        lines.append("each pass alone (images read / ms total):")
        for name, p in result["per_pass"].items():
            counts = " ".join(f"{k}={v}" for k, v in p["decoded"].items())
            lines.append(f"  {name:<22}{p['ms_total']:>8.0f} ms  {counts}")
    if "compare" in result:
        lines.append("")
        lines.append(
            f"{'pipeline':<24}{'QR':>8}{'Code 128':>10}{'FP':>5}{'ms/img':>9}{'max ms':>9}"
        )
        for row in result["compare"]:
            lines.append(
                f"{row['label']:<24}{_fraction(row['qr_decoded'], row['qr_total']):>8}"
                f"{_fraction(row['code128_decoded'], row['code128_total']):>10}"
                f"{row['false_positives']!s:>5}"
                f"{row['ms_per_image_median']:>9.2f}{row['ms_per_image_max']:>9.0f}"
            )
    p = result["parameters"]
    m = result["machine"]
    lines.append(
        f"passes: {', '.join(p['passes'])} (first {p['collect_first']} always run); "
        f"{p['runs']} runs per image"
    )
    lines.append(
        f"machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('python', '?')}, "
        f"OpenCV {m.get('opencv', '?')}, pyzbar {m.get('pyzbar', '?')}, "
        f"libzbar {m.get('libzbar', '?')}, zxing-cpp {m.get('zxing-cpp', '?')}"
    )
    return "\n".join(lines)


# --- runs ---------------------------------------------------------------------------------
def _measure(
    root: Path,
    sets: Mapping[str, Sequence[Path]],
    passes: Sequence[str],
    collect_first: int,
    runs: int,
) -> tuple[dict[str, dict[str, Any]], list[float], list[dict[str, str]]]:
    """Per-folder statistics, every image's median ms, and the unreadable images."""
    folders: dict[str, dict[str, Any]] = {}
    all_ms: list[float] = []
    errors: list[dict[str, str]] = []
    for folder, images in sets.items():
        stats = _run_folder(root, folder, images, passes, collect_first, runs)
        all_ms.extend(stats.pop("_ms"))
        errors.extend(
            {"image": f"{folder}/{e['image']}", "error": e["error"]} for e in stats["errors"]
        )
        folders[folder] = stats
    return folders, all_ms, errors


def _totals(folders: Mapping[str, Mapping[str, Any]], all_ms: Sequence[float]) -> dict[str, Any]:
    qr = [v for k, v in folders.items() if k.startswith("qrcode-") and v.get("total")]
    decoded, total = sum(v["decoded"] for v in qr), sum(v["total"] for v in qr)
    code128 = folders.get("code128-1", {})
    return {
        "qr_decoded": decoded,
        "qr_total": total,
        "qr_rate": _rate(decoded, total),
        "code128_decoded": code128.get("decoded"),
        "code128_total": code128.get("total"),
        "false_positives": folders.get(FALSE_POSITIVES, {}).get("false_positives"),
        "ms_per_image_median": _round(statistics.median(all_ms)) if all_ms else None,
        "ms_per_image_max": _round(max(all_ms)) if all_ms else None,
    }


def _comparisons() -> list[tuple[str, tuple[str, ...], int]]:
    """``--compare``: the default pipeline, zxing-cpp alone, and the zbar/OpenCV passes alone."""
    zbar_opencv = tuple(p for p in camera.DEFAULT_PASSES if p != "zxing-cpp")
    return [
        ("default", camera.DEFAULT_PASSES, camera.DEFAULT_COLLECT_FIRST),
        ("zxing-cpp alone", ("zxing-cpp",), 1),
        ("zbar + OpenCV passes", zbar_opencv, 2),
    ]


def _image_sets(root: Path) -> dict[str, list[Path]]:
    sets: dict[str, list[Path]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        images = sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
        if images:
            sets[folder.name] = images
    return sets


def _expected(image: Path) -> str | None:
    txt = image.with_suffix(".txt")
    if not txt.is_file():
        return None
    with open(txt, encoding="utf-8", newline="") as f:  # several hold CR LF: byte-exact
        return f.read()


def _run_folder(
    root: Path,
    folder: str,
    images: Sequence[Path],
    passes: Sequence[str],
    collect_first: int,
    runs: int,
) -> dict[str, Any]:
    ms: list[float] = []
    decoded = total = readable = false_positives = 0
    misses: list[str] = []
    other: dict[str, list[str]] = {}
    errors: list[dict[str, str]] = []
    found_by: Counter[str] = Counter()
    for image in images:
        expected = _expected(image)
        times: list[float] = []
        codes: list[camera.Decoded] = []
        try:
            for _ in range(runs):
                t0 = time.perf_counter()
                codes = camera.decode_file(image, passes=passes, collect_first=collect_first)
                times.append((time.perf_counter() - t0) * 1000)
        except CameraError as exc:
            errors.append({"image": image.name, "error": str(exc).removeprefix(f"{image}: ")})
            continue
        readable += 1
        ms.append(statistics.median(times))
        texts = [c.text for c in codes]
        if folder == FALSE_POSITIVES:
            if codes:
                false_positives += 1
                other[image.name] = texts
            continue
        if expected is None:
            continue
        total += 1
        if expected in texts:
            decoded += 1
            found_by[next(c.found_by for c in codes if c.text == expected)] += 1
        else:
            misses.append(image.name)
        extra = [t for t in texts if t != expected]
        if extra:
            other[image.name] = extra
    stats: dict[str, Any] = {
        "images": len(images),
        "readable": readable,
        "ms_per_image": {
            "median": _round(statistics.median(ms)) if ms else None,
            "max": _round(max(ms)) if ms else None,
        },
        "errors": errors,
        "_ms": ms,
    }
    if folder == FALSE_POSITIVES:
        stats["false_positives"] = false_positives
        stats["reads"] = other
        return stats
    if total == 0:  # e.g. qrcode-7: structured-append parts, no per-image text
        stats["note"] = "no expected texts: timed, not scored"
        stats["reads"] = other
        return stats
    stats.update(
        decoded=decoded,
        total=total,
        rate=_rate(decoded, total),
        misses=misses,
        other_reads=other,
        found_by=dict(found_by.most_common()),
    )
    ref = REFERENCE.get(folder)
    if ref is not None:
        stats["reference"] = {
            "decoder": "zxing-cpp",
            "read": ref[0],
            "total": ref[1],
            "rate": _rate(*ref),
            "note": "full set; this folder may hold a part of it: compare rates",
        }
    return stats


def _per_pass(root: Path, sets: Mapping[str, Sequence[Path]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    loaded = []
    for folder, images in sets.items():
        for image in images:
            try:
                loaded.append((folder, camera.read_image(image), _expected(image)))
            except CameraError:
                continue
    for name in camera.PASSES:
        counts: Counter[str] = Counter()
        wrong: Counter[str] = Counter()
        t0 = time.perf_counter()
        for folder, pixels, expected in loaded:
            texts = [c.text for c in camera.decode_image(pixels, passes=[name])]
            if expected is not None and expected in texts:
                counts[folder] += 1
            if folder == FALSE_POSITIVES and texts:
                wrong[folder] += 1
        out[name] = {
            "ms_total": _round((time.perf_counter() - t0) * 1000),
            "decoded": dict(sorted(counts.items())),
            "false_positives": sum(wrong.values()),
        }
    return out


# --- helpers ------------------------------------------------------------------------------
def _rate(n: int, total: int) -> float:
    return round(n / total, 4) if total else 0.0


def _fraction(n: int | None, total: int | None) -> str:
    return "-" if n is None or total is None else f"{n}/{total}"


def _round(ms: float) -> float:
    return round(ms, 2)


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return None


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _pass_list(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in camera.PASSES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown pass(es) {unknown or text!r}; known: {', '.join(camera.PASSES)}"
        )
    return names
