"""Every state file and export is written through ``custody.files``, and that helper is durable.

The first half reads the source with ``ast``: a call that writes, creates, renames or links a
file anywhere in the deployed packages, outside ``custody/files.py``, fails the test unless the
allowlist below names its file and function with a reason. The second half checks the helper
itself: whole data, exact modes, clean failures, short writes, concurrent writers.
"""

from __future__ import annotations

import ast
import errno
import os
import stat
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from custody import files
from custody.errors import StorageError
from custody.files import create_file, fsync_directory, link_file, move_file, replace_file

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("custody", "agent", "ledger", "sync", "firmware_bridge")
HELPER = "custody/files.py"

# (file, function qualname) -> why this write may bypass the helper. Keep it short.
ALLOWED: dict[tuple[str, str], str] = {
    ("ledger/authority.py", "Authority._lock"): (
        "opened only to hold flock(2) while an entry is signed; nothing is written to it"
    ),
    ("agent/recorder.py", "Recorder._checkpoint_lock"): (
        "opened only to hold flock(2) across processes; nothing is written to it"
    ),
    ("agent/scan/console.py", "_lock"): (
        "scan.lock: opened only for flock(2), one console per data directory; never written"
    ),
    ("agent/service/supervisor.py", "Service._take_lock"): (
        "the service lock: opened only for flock(2), one service per data directory"
    ),
    ("agent/cli_table.py", "quiet_broken_pipe"): (
        "/dev/null opened to replace a stdout whose reader went away; nothing is stored"
    ),
    ("ledger/verify/cli_table.py", "quiet_broken_pipe"): (
        "/dev/null opened to replace a stdout whose reader went away; nothing is stored"
    ),
    ("agent/replace.py", "exclusive"): (
        "the service's and the console's locks, opened only for flock(2) while a gateway "
        "moves to another ledger; never written"
    ),
    ("firmware_bridge/sim/runner.py", "PtySink.replug"): (
        "a device simulator's symlink to its pseudo-terminal (a stand-in for "
        "/dev/serial/by-id), not state; firmware_bridge imports nothing of ours"
    ),
}

# Calls that create, replace or move a directory entry whatever their arguments.
FORBIDDEN_FUNCTIONS = {
    "os.rename", "os.renames", "os.replace", "os.link", "os.symlink", "os.truncate",
    "os.mkfifo", "os.mknod",
    "shutil.move", "shutil.copy", "shutil.copy2", "shutil.copyfile", "shutil.copytree",
    "tempfile.mkstemp", "tempfile.NamedTemporaryFile", "tempfile.TemporaryFile",
}  # fmt: skip
# Methods of pathlib.Path that write or move (``replace``/``rename`` only with one argument:
# ``str.replace`` takes two, ``datetime.replace`` keywords).
WRITE_METHODS = {"write_text", "write_bytes", "touch", "hardlink_to", "symlink_to", "link_to"}
MOVE_METHODS = {"rename", "replace"}
# open()-like functions whose mode is the second argument.
OPEN_FUNCTIONS = {"open", "io.open", "codecs.open", "gzip.open", "bz2.open", "lzma.open"}
WRITE_FLAGS = {"O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND"}


@dataclass(frozen=True, slots=True)
class Finding:
    file: str
    function: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line} in {self.function}: {self.what}"


class _Scanner(ast.NodeVisitor):
    def __init__(self, file: str) -> None:
        self.file = file
        self.scope: list[str] = []
        self.aliases: dict[str, str] = {}  # local name -> dotted origin ("r" -> "os.replace")
        self.findings: list[Finding] = []

    # --- names ----------------------------------------------------------------------------
    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            if a.asname:
                self.aliases[a.asname] = a.name
            else:  # `import os.path` binds `os`
                top = a.name.split(".")[0]
                self.aliases[top] = top

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.module and node.level == 0:
            for a in node.names:
                self.aliases[a.asname or a.name] = f"{node.module}.{a.name}"

    def _dotted(self, node: ast.expr) -> str | None:
        if isinstance(node, ast.Name):
            return self.aliases.get(node.id, node.id)
        if isinstance(node, ast.Attribute):
            base = self._dotted(node.value)
            return None if base is None else f"{base}.{node.attr}"
        return None

    def _scoped(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _scoped

    # --- calls ----------------------------------------------------------------------------
    def _flag(self, node: ast.Call, what: str) -> None:
        function = ".".join(self.scope) or "<module>"
        self.findings.append(Finding(self.file, function, node.lineno, what))

    def visit_Call(self, node: ast.Call) -> None:
        self.generic_visit(node)
        name = self._dotted(node.func)
        if name in FORBIDDEN_FUNCTIONS:
            self._flag(node, f"{name}()")
        elif name in OPEN_FUNCTIONS:
            self._check_mode(node, _argument(node, 1, "mode"), name)
        elif name == "os.open":
            self._check_flags(node, _argument(node, 1, "flags"))
        elif isinstance(node.func, ast.Attribute):
            method = node.func.attr
            moves = method in MOVE_METHODS and len(node.args) == 1 and not node.keywords
            if method in WRITE_METHODS or moves:
                self._flag(node, f".{method}()")
            elif method == "open":  # Path.open(mode): only a literal mode can be judged
                mode = _argument(node, 0, "mode")
                if isinstance(mode, ast.Constant) and isinstance(mode.value, str):
                    self._check_mode(node, mode, ".open")

    def _check_mode(self, node: ast.Call, mode: ast.expr | None, name: str) -> None:
        if mode is None:
            return  # "r"
        if not (isinstance(mode, ast.Constant) and isinstance(mode.value, str)):
            self._flag(node, f"{name}() with a mode that is not a literal")
        elif set(mode.value) & set("wax+"):
            self._flag(node, f"{name}(..., {mode.value!r})")

    def _check_flags(self, node: ast.Call, flags: ast.expr | None) -> None:
        names: set[str] = set()
        for sub in ast.walk(flags) if flags is not None else ():
            if isinstance(sub, ast.Attribute):
                names.add(sub.attr)
            elif isinstance(sub, ast.Name) and sub.id not in self.aliases:
                names.add("<variable>")  # flags built elsewhere cannot be judged here
            elif isinstance(sub, ast.Name):
                names.add(self.aliases[sub.id].rsplit(".", 1)[-1])
        bad = sorted(names & (WRITE_FLAGS | {"<variable>"}))
        if bad:
            self._flag(node, f"os.open(..., {'|'.join(bad)})")


def _argument(node: ast.Call, position: int, keyword: str) -> ast.expr | None:
    for kw in node.keywords:
        if kw.arg == keyword:
            return kw.value
    return node.args[position] if len(node.args) > position else None


def scan_source(source: str, file: str) -> list[Finding]:
    scanner = _Scanner(file)
    scanner.visit(ast.parse(source))
    return scanner.findings


def _sources() -> Iterator[tuple[str, Path]]:
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            yield path.relative_to(REPO).as_posix(), path


def _all_findings() -> list[Finding]:
    found: list[Finding] = []
    for rel, path in _sources():
        if rel != HELPER:
            found += scan_source(path.read_text(encoding="utf-8"), rel)
    return found


def test_every_file_write_goes_through_custody_files() -> None:
    bypass = [f for f in _all_findings() if (f.file, f.function) not in ALLOWED]
    assert not bypass, (
        "write these through custody.files (replace_file, create_file, move_file, link_file), "
        "or allowlist them in this test with a reason:\n" + "\n".join(map(str, bypass))
    )


def test_allowlist_has_no_stale_entries() -> None:
    used = {(f.file, f.function) for f in _all_findings()}
    assert not set(ALLOWED) - used, f"allowed but no longer needed: {sorted(set(ALLOWED) - used)}"


def test_the_scanner_sees_every_kind_of_write() -> None:
    source = """
import os, shutil, tempfile
from os import replace as swap
from pathlib import Path
def f(p: Path, q: Path, m: str, flags: int) -> None:
    p.write_text("x")
    p.write_bytes(b"x")
    open(p, "w")
    open(p, mode="ab")
    open(p, "r+")
    open(p, m)
    p.open("x")
    p.open(mode="w")
    os.open(p, os.O_WRONLY)
    os.open(p, os.O_RDWR | os.O_CREAT, 0o600)
    os.open(p, flags)
    os.rename(p, q)
    os.replace(p, q)
    swap(p, q)
    shutil.move(p, q)
    p.rename(q)
    p.replace(q)
    os.link(p, q)
    p.symlink_to(q)
    tempfile.mkstemp()
"""
    found = scan_source(source, "x.py")
    body = [i for i, line in enumerate(source.splitlines(), 1) if line.startswith("    ")]
    assert [f.line for f in found] == body, "\n".join(map(str, found))
    assert {f.function for f in found} == {"f"}
    harmless = """
import os
def g(p, s, d, outbox):
    open(p)
    open(p, "rb")
    p.open()
    p.read_text()
    os.open(p, os.O_RDONLY | os.O_DIRECTORY)
    s.replace("a", "b")
    d.replace(microsecond=0)
    outbox.open(p, check=None)
"""
    assert scan_source(harmless, "y.py") == []


# --- the helper's behaviour ----------------------------------------------------------------------
def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_data_lands_whole_and_replaces_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    big = os.urandom(3 * 2**20)  # larger than one pipe or page: several write(2) calls may run
    replace_file(path, b"old")
    replace_file(path, big)
    assert path.read_bytes() == big
    replace_file(path, b"")
    assert path.read_bytes() == b""
    assert _leftovers(tmp_path) == []


@pytest.mark.usefixtures("umask")
@pytest.mark.parametrize("mask", [0o000, 0o022, 0o077, 0o277])
@pytest.mark.parametrize("mode", [0o600, 0o644, 0o640])
def test_an_explicit_mode_is_applied_whatever_the_umask(
    tmp_path: Path, mask: int, mode: int
) -> None:
    os.umask(mask)
    replace_file(tmp_path / "replaced", b"x", mode)
    create_file(tmp_path / "created", b"x", mode)
    for name in ("replaced", "created"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name


@pytest.mark.usefixtures("umask")
def test_without_a_mode_the_umask_decides_as_for_any_new_file(tmp_path: Path) -> None:
    os.umask(0o027)
    replace_file(tmp_path / "export.json", b"{}", mode=None)
    assert stat.S_IMODE((tmp_path / "export.json").stat().st_mode) == 0o640


def test_a_secret_is_never_readable_by_others_while_it_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []
    real_write = os.write

    def spy(fd: int, data: bytes | memoryview) -> int:
        seen.append(stat.S_IMODE(os.fstat(fd).st_mode))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", spy)
    create_file(tmp_path / "device.key", b"seed\n", 0o600)
    replace_file(tmp_path / "tls.key", b"pem\n", 0o600)
    assert seen and set(seen) == {0o600}


def test_a_directory_in_the_way_is_a_storage_error_naming_it(tmp_path: Path) -> None:
    target = tmp_path / "crl.pem"
    target.mkdir()
    (target / "inside").write_bytes(b"keep")  # a non-empty directory: rename(2) must fail
    with pytest.raises(StorageError) as err:
        replace_file(target, b"data")
    assert str(target) in str(err.value)
    assert os.strerror(errno.EISDIR) in str(err.value) or "directory" in str(err.value).lower()
    assert _leftovers(tmp_path) == []
    assert (target / "inside").read_bytes() == b"keep"


def test_a_missing_directory_is_a_storage_error_naming_the_path(tmp_path: Path) -> None:
    target = tmp_path / "no-such-dir" / "registry.cbor"
    for write in (replace_file, create_file):
        with pytest.raises(StorageError, match=r"no-such-dir/registry\.cbor") as err:
            write(target, b"x")
        assert os.strerror(errno.ENOENT) in str(err.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into any directory")
def test_a_read_only_directory_is_a_storage_error(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(StorageError, match=r"config\.toml"):
            replace_file(tmp_path / "config.toml", b"x")
    finally:
        tmp_path.chmod(0o700)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("failing", ["write", "fsync", "replace", "link"])
def test_a_failure_on_the_way_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    path = tmp_path / "issued.json"
    path.write_bytes(b"old")

    def fail(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, failing, fail)
    if failing == "link":
        with pytest.raises(StorageError, match=r"new\.key") as err:
            create_file(tmp_path / "new.key", b"x", 0o600)
    else:
        with pytest.raises(StorageError, match=r"issued\.json") as err:
            replace_file(path, b"new")
    monkeypatch.undo()
    assert os.strerror(errno.ENOSPC) in str(err.value)
    assert path.read_bytes() == b"old"
    assert not (tmp_path / "new.key").exists()
    assert _leftovers(tmp_path) == []


def test_short_writes_are_continued_until_all_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0
    real_write = os.write

    def one_byte(fd: int, data: bytes | memoryview) -> int:
        nonlocal calls
        calls += 1
        return real_write(fd, bytes(data[:1]))

    monkeypatch.setattr(os, "write", one_byte)
    data = bytes(range(256)) * 4
    replace_file(tmp_path / "a", data)
    create_file(tmp_path / "b", data)
    monkeypatch.undo()
    assert (tmp_path / "a").read_bytes() == data
    assert (tmp_path / "b").read_bytes() == data
    assert calls == 2 * len(data)


def test_a_write_that_writes_nothing_is_an_error_not_a_hang(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "write", lambda fd, data: 0)
    with pytest.raises(StorageError, match="wrote nothing"):
        replace_file(tmp_path / "a", b"x")
    monkeypatch.undo()
    assert _leftovers(tmp_path) == []


def test_concurrent_writers_use_their_own_temporary_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two writers of one path hold their temporary files open at the same moment; each
    finishes whole, and the file ends as one of them, never a mix."""
    path = tmp_path / "scan-state.json"
    both_written = threading.Barrier(2, timeout=10)
    temporaries: set[str] = set()
    real_fsync = os.fsync

    def meet(fd: int) -> None:
        if stat.S_ISREG(os.fstat(fd).st_mode):  # the data fsync, not the directory's
            temporaries.update(_leftovers(tmp_path))
            both_written.wait()
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", meet)
    payloads = [bytes([65 + i]) * 100_000 for i in range(2)]
    errors: list[BaseException] = []

    def writer(data: bytes) -> None:
        try:
            replace_file(path, data)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    monkeypatch.undo()
    assert not errors
    assert len(temporaries) == 2, temporaries  # both existed at once, under different names
    assert path.read_bytes() in payloads
    assert _leftovers(tmp_path) == []


def test_many_concurrent_writers_never_tear_the_file(tmp_path: Path) -> None:
    path = tmp_path / "service.json"
    payloads = [bytes([97 + i]) * (50_000 + i) for i in range(8)]
    errors: list[BaseException] = []

    def writer(data: bytes) -> None:
        try:
            for _ in range(10):
                replace_file(path, data)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert path.read_bytes() in payloads
    assert _leftovers(tmp_path) == []


def test_create_file_never_replaces_and_leaves_nothing_behind(tmp_path: Path) -> None:
    path = tmp_path / "ledger.key"
    create_file(path, b"first", 0o600)
    with pytest.raises(FileExistsError):
        create_file(path, b"second", 0o600)
    assert path.read_bytes() == b"first"
    assert _leftovers(tmp_path) == []


# --- what gets fsynced, in what order (Linux: fds are named in /proc/self/fd) ---------------------
@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    if not sys.platform.startswith("linux"):
        pytest.skip("names fds through /proc/self/fd")
    log: list[str] = []
    real_fsync, real_replace, real_link = os.fsync, os.replace, os.link

    def fsync(fd: int) -> None:
        log.append("fsync " + os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def replace(src: str | Path, dst: str | Path) -> None:
        log.append(f"rename {dst}")
        real_replace(src, dst)

    def link(src: str | Path, dst: str | Path) -> None:
        log.append(f"link {dst}")
        real_link(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "link", link)
    return log


def test_replace_file_fsyncs_the_data_then_renames_then_fsyncs_the_directory(
    tmp_path: Path, fsyncs: list[str]
) -> None:
    tmp_path = tmp_path.resolve()  # /proc/self/fd names real paths
    path = tmp_path / "ca.crt"
    replace_file(path, b"pem")
    assert len(fsyncs) == 3, fsyncs
    assert fsyncs[0].startswith(f"fsync {tmp_path}/.ca.crt.") and fsyncs[0].endswith(".tmp")
    assert fsyncs[1:] == [f"rename {path}", f"fsync {tmp_path}"]


def test_create_file_fsyncs_the_data_links_then_fsyncs_the_directory(
    tmp_path: Path, fsyncs: list[str]
) -> None:
    tmp_path = tmp_path.resolve()  # /proc/self/fd names real paths
    path = tmp_path / "device.key"
    create_file(path, b"seed", 0o600)
    assert fsyncs[0].startswith(f"fsync {tmp_path}/.device.key.")
    assert fsyncs[1:] == [f"link {path}", f"fsync {tmp_path}"]


def test_a_move_fsyncs_both_directories(tmp_path: Path, fsyncs: list[str]) -> None:
    tmp_path = tmp_path.resolve()  # /proc/self/fd names real paths
    quarantine = tmp_path / "quarantine"
    quarantine.mkdir()
    key = tmp_path / "device.key"
    key.write_bytes(b"seed")
    move_file(key, quarantine / "device.key-20240101T000000Z")
    assert fsyncs == [
        f"rename {quarantine / 'device.key-20240101T000000Z'}",
        f"fsync {quarantine}",
        f"fsync {tmp_path}",
    ]
    fsyncs.clear()
    (tmp_path / "a").write_bytes(b"x")
    move_file(tmp_path / "a", tmp_path / "b")  # one directory: fsynced once
    assert fsyncs == [f"rename {tmp_path / 'b'}", f"fsync {tmp_path}"]


def test_a_link_fsyncs_its_directory_and_fsync_directory_fsyncs(
    tmp_path: Path, fsyncs: list[str]
) -> None:
    tmp_path = tmp_path.resolve()  # /proc/self/fd names real paths
    retired = tmp_path / "retired-keys"
    retired.mkdir()
    key = tmp_path / "device.key"
    key.write_bytes(b"seed")
    link_file(key, retired / "ab.key")
    fsync_directory(tmp_path)
    assert fsyncs == [f"link {retired / 'ab.key'}", f"fsync {retired}", f"fsync {tmp_path}"]
    with pytest.raises(FileExistsError):
        link_file(key, retired / "ab.key")


def test_move_and_fsync_directory_failures_are_storage_errors(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="nothing-here"):
        move_file(tmp_path / "nothing-here", tmp_path / "b")
    with pytest.raises(StorageError, match="no-dir"):
        fsync_directory(tmp_path / "no-dir")
    with pytest.raises(StorageError, match="nothing-here"):
        link_file(tmp_path / "nothing-here", tmp_path / "b")


def test_the_helper_imports_only_the_standard_library_and_custody() -> None:
    tree = ast.parse(Path(files.__file__).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            top = node.module.split(".")[0]
            assert top in sys.stdlib_module_names or top in {"custody", "__future__"}, top
        elif isinstance(node, ast.Import):
            for a in node.names:
                assert a.name.split(".")[0] in sys.stdlib_module_names, a.name
