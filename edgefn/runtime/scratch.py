"""The host side of an instance's /tmp: a directory of its own, its size cap, and the room it uses.

Two ways to cap it, one per kind of guest. A core module's is a plain directory: runtime/host/scratch.py
shadows the WASI preview 1 calls that take room and asks the instance's ScratchDirectory before each. A
component's WASI 0.2 cannot be shadowed from wasmtime-py, so its directory is a tmpfs of the cap's size
that the kernel caps (TmpfsMounts, mounted in a namespace of its own by runtime/_tmpfs_mounter.py). This
module knows nothing of wasm.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable

from . import _native

__all__ = ["BLOCK", "ScratchDirectory", "ScratchRoot", "TmpfsMounts"]

_log = logging.getLogger("edgefn.runtime")

#: what a file system counts room in: a write of one byte may take a block
BLOCK = 4096


class ScratchDirectory:
    """One instance's /tmp on the host: its path, its cap, the room it uses (st_blocks, as `du`), and the
    first write refused."""

    __slots__ = ("path", "cap_bytes", "_bound", "refused", "originals", "_unmount", "_fd")

    def __init__(self, path: Path, cap_bytes: int, unmount: Callable[[], None] | None = None) -> None:
        self.path = path
        self.cap_bytes = cap_bytes
        #: a tmpfs's (the kernel caps it): how it goes; None: a plain directory, capped by admit()
        self._unmount = unmount
        #: an upper bound of the room used: exact after a walk, then each admitted growth added in full
        self._bound = 0
        #: bytes asked for by the first write refused, if one was
        self.refused: int | None = None
        #: the relay's functions in this instance's Store (made at its first call that takes room)
        self.originals: dict[bytes, Any] = {}
        #: a tmpfs's root, open: checked after every invocation, and a path through /proc/PID/root is slow to walk
        self._fd: int | None = None
        if unmount is not None:
            with contextlib.suppress(OSError):
                self._fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def used(self) -> int:
        """The room the directory holds now: every entry's allocated blocks, as a file system counts them."""
        total = 0
        stack = [str(self.path)]
        while stack:
            with contextlib.suppress(OSError), os.scandir(stack.pop()) as entries:
                for entry in entries:
                    st = entry.stat(follow_symlinks=False)
                    total += max(st.st_blocks * 512, BLOCK if entry.is_dir(follow_symlinks=False) else 0)
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
        return total

    def admit(self, growth: int) -> bool:
        """Whether `growth` more bytes fit under the cap (walking the directory only when the bound says no)."""
        growth = -(-growth // BLOCK) * BLOCK
        if self._bound + growth > self.cap_bytes:
            self._bound = self.used()  # the bound overcounts rewrites and deletions: count exactly before refusing
            if self._bound + growth > self.cap_bytes:
                if self.refused is None:
                    self.refused = growth
                return False
        self._bound += growth
        return True

    @property
    def kernel_capped(self) -> bool:
        return self._unmount is not None

    def note_if_full(self) -> None:
        """For a tmpfs: record a refusal if it is full (the kernel refused the write, or the next one; the
        guest saw ENOSPC either way). Its size in bytes is the kernel's to know: 0 stands for it."""
        if self._fd is not None and self.refused is None:
            with contextlib.suppress(OSError):
                if _native.fs_full(self._fd):
                    self.refused = 0

    def remove(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # a lazily detached mount lives as long as an fd on it
        if self._unmount is not None:
            unmount, self._unmount = self._unmount, None
            unmount()
            return
        try:
            os.rmdir(self.path)  # most instances never wrote to /tmp: an empty directory goes in one call
        except OSError:
            shutil.rmtree(self.path, ignore_errors=True)


class ScratchRoot:
    """Where a process makes its instances' scratch directories: one host directory per process, named by
    its pid, so that a process killed with SIGKILL leaves nothing the next one does not sweep."""

    PREFIX = "edgefn-tmp-"

    def __init__(self, parent: Path | None = None) -> None:
        self._parent = parent or Path(tempfile.gettempdir())
        self._path: Path | None = None
        self._mounts: TmpfsMounts | None = None
        self._lock = threading.Lock()

    @property
    def path(self) -> Path | None:
        """This process's directory of scratch directories (None until the first is made)."""
        return self._path

    def make(self, cap_bytes: int) -> ScratchDirectory:
        if self._path is None or not self._path.is_dir():
            self._path = self._create()
        return ScratchDirectory(Path(tempfile.mkdtemp(prefix="i", dir=self._path)), cap_bytes)

    @property
    def mounts(self) -> TmpfsMounts | None:
        """Components' tmpfs mounts (None before the first)."""
        return self._mounts

    def mount(self, cap_bytes: int) -> ScratchDirectory | None:
        """A kernel-capped tmpfs of `cap_bytes` (components); None where this host cannot make one (the
        reason logged once: such an instance has no /tmp)."""
        with self._lock:
            if self._mounts is None:
                if self._path is None or not self._path.is_dir():
                    self._path = self._create()
                self._mounts = TmpfsMounts(self._path / "mounts")
        return self._mounts.make(cap_bytes)

    def close(self) -> None:
        if self._mounts is not None:
            self._mounts.close()
            self._mounts = None
        if self._path is not None:
            shutil.rmtree(self._path, ignore_errors=True)
            self._path = None

    def _create(self) -> Path:
        self._parent.mkdir(parents=True, exist_ok=True)
        for old in self._parent.glob(f"{self.PREFIX}*"):  # the scratch of processes that died without cleaning up
            pid = old.name[len(self.PREFIX) :].split("-")[0]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(old, ignore_errors=True)
        return Path(tempfile.mkdtemp(prefix=f"{self.PREFIX}{os.getpid()}-", dir=self._parent))


class TmpfsMounts:
    """Size-capped tmpfs directories, one per component instance, mounted by a child process in a user and
    mount namespace of its own (runtime/_tmpfs_mounter.py) and reached through its /proc/PID/root. Started
    at the first; if the host cannot (not Linux, user namespaces off), every make() is None."""

    def __init__(self, base: Path) -> None:
        self._base = base
        self._lock = threading.Lock()
        self._names = itertools.count(1)
        #: mounts to unmount: removal may run in a finalizer, in the middle of a make() on the same thread
        self._gone: collections.deque[str] = collections.deque()
        self._proc: subprocess.Popen[str] | None = None
        self.unavailable: str | None = None
        base.mkdir(parents=True, exist_ok=True)
        if not sys.platform.startswith("linux"):
            self._refuse("a size-capped /tmp for components needs Linux (a tmpfs in a user namespace)")
            return
        script = Path(__file__).with_name("_tmpfs_mounter.py")
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-S", str(script), str(base)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, text=True, bufsize=1, start_new_session=True,
            )
            first = self._answer()
        except OSError as exc:
            first = f"err {exc}"
        if first != "ready":
            self.close()
            self._refuse(f"a size-capped /tmp for components could not be set up ({first.removeprefix('err ')})")

    def _refuse(self, why: str) -> None:
        self.unavailable = why
        _log.warning("components get no /tmp: %s", why)

    def _answer(self) -> str:
        assert self._proc is not None and self._proc.stdout is not None
        return self._proc.stdout.readline().strip() or "err the mount process ended"

    def _send(self, line: str) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(line)
        self._proc.stdin.flush()

    def make(self, cap_bytes: int) -> ScratchDirectory | None:
        if self._proc is None:
            return None
        name = f"i{next(self._names)}"
        with self._lock:
            try:
                self._send(f"m {name} {cap_bytes}\n")
                answer = self._answer()
            except (OSError, ValueError) as exc:
                answer = f"err {exc}"
        self._flush()
        if answer != "ok":
            if self._proc.poll() is not None:  # the mount process is gone (killed): say so once, not per instance
                self.close()
                self._refuse(f"the mount process ended ({answer.removeprefix('err ')})")
            else:
                _log.warning("an instance gets no /tmp: %s", answer.removeprefix("err "))
            return None
        return ScratchDirectory(Path(f"/proc/{self._proc.pid}/root{self._base}/{name}"), cap_bytes, lambda: self._unmount(name))

    def mounted(self) -> list[str]:
        """The instance mounts there are now (the mount process's own mount table), by name."""
        if self._proc is None:
            return []
        prefix = f"{self._base}/"
        with open(f"/proc/{self._proc.pid}/mounts") as table:
            return sorted(point[len(prefix) :] for point in (line.split()[1] for line in table) if point.startswith(prefix))

    def _unmount(self, name: str) -> None:
        self._gone.append(name)
        self._flush()

    def _flush(self) -> None:
        if self._proc is None or not self._lock.acquire(blocking=False):
            return  # whoever holds the lock flushes when it is done
        try:
            while self._gone:
                self._send(f"u {self._gone.popleft()}\n")
        except (OSError, ValueError):
            pass
        finally:
            self._lock.release()

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError, ValueError):
            assert proc.stdin is not None
            proc.stdin.close()  # EOF: it exits, and its namespace's mounts with it
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
