"""The process that owns components' /tmp mounts (run as a script by runtime/scratch.TmpfsMounts, never imported).

It enters a user namespace and a mount namespace of its own, which any user may (Linux), and there mounts
one tmpfs per instance with the instance's `ephemeral_storage_mb` as its size: the kernel then caps the
directory, as WASI 0.2 cannot. Its parent reaches each mount through /proc/PID/root. The mounts exist
only in this process's namespace, so they vanish with it, however the server ends.

Protocol, one line each way: `m NAME BYTES` -> `ok` or `err REASON`; `u NAME` (no answer). EOF: exit.
"""

import ctypes
import os
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 2, 4, 8, 16384, 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG = 1
SIGKILL = 9

libc = ctypes.CDLL(None, use_errno=True)


def check(rc: int, what: str) -> None:
    if rc != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def mount_tmpfs(path: str, size: int) -> None:
    options = f"size={size},mode=0700,uid={os.getuid()},gid={os.getgid()}".encode()
    check(libc.mount(b"tmpfs", path.encode(), b"tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, options), f"mount a tmpfs at {path}")


def enter_namespaces(base: str) -> None:
    check(libc.prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0), "prctl")  # the server gone, the mounts go too
    uid, gid = os.getuid(), os.getgid()
    check(libc.unshare(CLONE_NEWUSER | CLONE_NEWNS), "unshare a user and a mount namespace")
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"{uid} {uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"{gid} {gid} 1")
    check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make the mount tree private")
    mount_tmpfs(base, 1 << 20)  # the mount points themselves live in memory, in this namespace only


def serve(base: str) -> None:
    for line in sys.stdin:
        op, name, *rest = line.split()
        path = os.path.join(base, name)
        if op == "m":
            try:
                os.mkdir(path, 0o700)
                mount_tmpfs(path, int(rest[0]))
            except OSError as exc:
                print(f"err {exc}", flush=True)
            else:
                print("ok", flush=True)
        elif op == "u":
            libc.umount2(path.encode(), MNT_DETACH)  # lazy: an fd the guest's Store still holds keeps it until dropped
            try:
                os.rmdir(path)
            except OSError:
                pass


def main() -> None:
    base = sys.argv[1]
    try:
        enter_namespaces(base)
    except OSError as exc:
        print(f"err {exc}", flush=True)
        return
    print("ready", flush=True)
    serve(base)


if __name__ == "__main__":
    main()
