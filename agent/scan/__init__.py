"""The handheld scan-and-tag console (``custody-agent scan``).

``session`` is the logic, sans I/O (an input in, a screen and effects out); ``index``
projects the outbox into bags, seals and lots; ``screen`` lays a screen out for a small
terminal; ``messages`` holds every string in English and French; ``console`` is the thin
terminal front end that wires them to stdin, serial ports, a camera and the recorder.
"""

from agent.scan.console import ConsoleOptions, run_console
from agent.scan.index import Bag, ScanIndex
from agent.scan.messages import Catalogue, choose_language
from agent.scan.session import ScanSession, Step

__all__ = [
    "Bag",
    "Catalogue",
    "ConsoleOptions",
    "ScanIndex",
    "ScanSession",
    "Step",
    "choose_language",
    "run_console",
]
