"""Windows and macOS: no POSIX-only name on the mapping, fine-tuning or plugin paths without a fallback, and the
portable file locks and renames (core.common.locks) doing what the engine relies on.

The scan fails on any direct use of a POSIX-only module or attribute in core/, ui/ and plugin.py: such a name must
be reached through getattr/hasattr (`getattr(signal, "SIGHUP", None)`) or imported inside `try: ... except
ImportError`, and a Linux path ("/proc/...", "/dev/...") only under a check that it exists or of the platform."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from core.common import locks

REPO = Path(__file__).resolve().parents[2]
SOURCES = sorted([*REPO.joinpath("core").rglob("*.py"), *REPO.joinpath("ui").rglob("*.py"), REPO / "plugin.py"])
POSIX_MODULES = {"fcntl", "resource", "termios", "pwd", "grp", "posix"}
POSIX_ATTRIBUTES = {
    "os": {"statvfs", "fstatvfs", "sched_getaffinity", "getuid", "geteuid", "getgid", "killpg", "setsid", "fork",
           "getpgid", "setpgrp", "WNOHANG", "getloadavg", "O_CLOEXEC", "mkfifo", "chown", "nice"},
    "signal": {"SIGHUP", "SIGKILL", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGPIPE", "SIGCHLD", "alarm",
               "pause", "setitimer", "siginterrupt", "pthread_kill", "pthread_sigmask"},
}


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _guarded_import(node: ast.AST, parents: dict) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.Try) and any(
                handler.type is not None and "ImportError" in ast.unparse(handler.type) for handler in node.handlers):
            return True
    return False


def _guarded_path(node: ast.AST, parents: dict) -> bool:
    while node in parents:
        parent = parents[node]
        if isinstance(parent, ast.If) and any(word in ast.unparse(parent.test)
                                              for word in ("platform", "exists", "os.name", "sys.platform")):
            return True
        if isinstance(parent, ast.Call) and ast.unparse(parent.func) in ("os.path.exists", "glob.glob"):
            return True
        if isinstance(parent, ast.BoolOp) and "exists" in ast.unparse(parent):
            return True
        node = parent
    return False


def posix_only_uses(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    parents = _parents(tree)
    found = []
    for node in ast.walk(tree):
        where = f"{path.relative_to(REPO)}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if {n.split(".")[0] for n in names} & POSIX_MODULES and not _guarded_import(node, parents):
                found.append(f"{where}: import of {names}")
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.attr in POSIX_ATTRIBUTES.get(node.value.id, ()):
                found.append(f"{where}: {node.value.id}.{node.attr}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                node.value.startswith(("/proc/", "/dev/")) and not _guarded_path(node, parents):
            found.append(f"{where}: the Linux path {node.value!r}")
    return found


def test_no_posix_only_name_without_a_fallback():
    found = [use for path in SOURCES for use in posix_only_uses(path)]
    assert found == []


def test_the_scan_finds_what_would_crash_on_windows(tmp_path):
    probe = REPO / "core" / "_portability_probe.py"
    probe.write_text("import fcntl\nimport os, signal\nsignal.signal(signal.SIGHUP, None)\nos.statvfs('.')\n"
                     "open('/proc/self/maps')\ntry:\n    import resource\nexcept ImportError:\n    resource = None\n"
                     "if os.path.exists('/proc/self/status'):\n    open('/proc/self/status')\n"
                     "hup = getattr(signal, 'SIGHUP', None)\n")
    try:
        found = posix_only_uses(probe)
    finally:
        probe.unlink()
    assert [f.split(": ", 1)[1] for f in found] == ["import of ['fcntl']", "signal.SIGHUP", "os.statvfs",
                                                    "the Linux path '/proc/self/maps'"]


def test_a_lock_is_exclusive_between_open_files_and_dies_with_its_file(tmp_path):
    lock = tmp_path / ".x.urbanmtl-lock"
    first = os.open(lock, os.O_RDWR | os.O_CREAT)
    second = os.open(lock, os.O_RDWR)
    try:
        assert locks.locking_available()
        assert locks.try_lock(first) is True
        assert locks.try_lock(second) is False            # held by another open file
        locks.unlock(first)
        assert locks.try_lock(second) is True
    finally:
        os.close(first)
        os.close(second)
    third = os.open(lock, os.O_RDWR)
    try:
        assert locks.try_lock(third) is True               # closing released it
    finally:
        os.close(third)


def test_a_rename_is_retried_only_where_windows_refuses_for_a_moment(tmp_path, monkeypatch):
    source, target = tmp_path / "a.tmp", tmp_path / "a.tif"
    source.write_text("new")
    target.write_text("old")
    calls = []
    real = os.replace

    def busy_twice(a, b):
        calls.append(1)
        if len(calls) <= 2:
            raise PermissionError(13, "The process cannot access the file because it is being used")
        real(a, b)

    monkeypatch.setattr(locks.os, "replace", busy_twice)
    monkeypatch.setattr(locks.os, "name", "nt")
    locks.replace(source, target)
    assert len(calls) == 3 and target.read_text() == "new"
    monkeypatch.setattr(locks.os, "name", "posix")
    source.write_text("again")
    calls.clear()
    with pytest.raises(PermissionError):
        locks.replace(source, target)                      # a real permission problem on POSIX is not retried
