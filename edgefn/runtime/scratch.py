"""The host side of an instance's /tmp: a directory of its own, its size cap, and the room it uses.

runtime/host/scratch.py shadows the WASI calls that take room and asks the instance's ScratchDirectory
before each; this module knows nothing of wasm.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["BLOCK", "ScratchDirectory", "ScratchRoot"]

#: what a file system counts room in: a write of one byte may take a block
BLOCK = 4096


class ScratchDirectory:
    """One instance's /tmp on the host: its path, its cap, the room it uses (st_blocks, as `du`), and the
    first write refused."""

    __slots__ = ("path", "cap_bytes", "_bound", "refused", "originals")

    def __init__(self, path: Path, cap_bytes: int) -> None:
        self.path = path
        self.cap_bytes = cap_bytes
        #: an upper bound of the room used: exact after a walk, then each admitted growth added in full
        self._bound = 0
        #: bytes asked for by the first write refused, if one was
        self.refused: int | None = None
        #: the relay's functions in this instance's Store (made at its first call that takes room)
        self.originals: dict[bytes, Any] = {}

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

    def remove(self) -> None:
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

    @property
    def path(self) -> Path | None:
        """This process's directory of scratch directories (None until the first is made)."""
        return self._path

    def make(self, cap_bytes: int) -> ScratchDirectory:
        if self._path is None or not self._path.is_dir():
            self._path = self._create()
        return ScratchDirectory(Path(tempfile.mkdtemp(prefix="i", dir=self._path)), cap_bytes)

    def close(self) -> None:
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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
