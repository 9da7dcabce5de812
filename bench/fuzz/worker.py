"""One libFuzzer session: ``python -m bench.fuzz.worker TARGET [libFuzzer options] [corpus dirs]``.

Run by ``python -m bench fuzz`` in a subprocess per target (``atheris.Fuzz`` never returns).
Our packages are imported inside ``atheris.instrument_imports`` so that libFuzzer sees their
branches and comparisons; this module and ``bench.fuzz`` import nothing of ours at the top for
that reason. ``tomllib`` is instrumented too: the config target's inputs must get through it
before they reach our settings table.
"""

from __future__ import annotations

import shlex
import sys

import atheris

_INSTRUMENTED = ["custody", "sync", "ledger", "firmware_bridge", "agent", "bench.fuzz", "tomllib"]


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        sys.exit("usage: python -m bench.fuzz.worker TARGET [libFuzzer options] [corpus dirs]")
    with atheris.instrument_imports(include=_INSTRUMENTED):
        from bench.fuzz.targets import TARGETS
    name = argv[1]
    # libFuzzer re-runs its argv[0] through the shell for -merge (and -fork): make it the
    # command that starts this worker on this target, not the path of this file.
    again = f"{shlex.quote(sys.executable)} -m bench.fuzz.worker {shlex.quote(name)}"
    atheris.Setup([again, *argv[2:]], TARGETS[name])
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
