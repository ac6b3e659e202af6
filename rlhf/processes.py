"""Child processes that die with their parent, and run-directory locks.

A sweep runs each trial, and the pipeline each stage, as a child process. If the parent is killed
(kill -9, OOM killer, a lost SLURM allocation) nothing would stop the child: it would go on writing into a
directory that a resumed parent then hands to a second runner. So every child is started with a
parent-death guard: on Linux `prctl(PR_SET_PDEATHSIG, SIGTERM)` (the kernel signals the child when the
parent dies; a parent that died before the call is caught by comparing the parent pid), elsewhere a
watchdog thread in the child (`start_parent_watchdog`, started by `rlhf` when RLHF_PARENT_PID is set).
SIGTERM rather than SIGKILL so `accelerate launch` can pass it on to its workers. A directory lock
(`lock_directory`) is an flock that the child inherits, so it is held as long as the trial's process
lives, even when the sweep that took it is gone.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import IO, Callable, Optional

PR_SET_PDEATHSIG = 1
PARENT_PID_ENV = "RLHF_PARENT_PID"
LOCK_FILE = ".run.lock"


def parent_death_guard(sig: int = signal.SIGTERM) -> Optional[Callable[[], None]]:
    """A `preexec_fn` that makes the child receive `sig` when this process dies (Linux; None elsewhere)."""
    if not sys.platform.startswith("linux"):
        return None
    parent = os.getpid()

    def guard() -> None:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:  # the parent died between fork and prctl
            os.kill(os.getpid(), sig)

    return guard


def child_environment(env: Optional[dict] = None) -> dict:
    """The environment for a guarded child: it names its parent, for the watchdog where prctl is missing."""
    return {**(os.environ if env is None else env), PARENT_PID_ENV: str(os.getpid())}


def start_parent_watchdog(poll_s: float = 1.0) -> None:
    """Where there is no PR_SET_PDEATHSIG: stop this process (SIGTERM) once its parent is gone."""
    if not os.environ.get(PARENT_PID_ENV) or sys.platform.startswith("linux"):
        return
    parent = os.getppid()  # the launcher's pid may be a grandparent's (accelerate launch): watch our own parent

    def watch() -> None:
        while os.getppid() == parent:  # a dead parent's children are adopted by another process
            time.sleep(poll_s)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def kill_group(pid: int, sig: int = signal.SIGTERM) -> None:
    """Signal the process group led by `pid` (a child started with start_new_session=True)."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class DirectoryLocked(Exception):
    """Another process holds the directory's lock; the message names its pid."""


def lock_directory(directory: str | os.PathLike, name: str = LOCK_FILE, wait_s: float = 0.0) -> IO:
    """An exclusive flock on <directory>/<name> holding this pid; raises DirectoryLocked if another process
    still holds it after `wait_s` seconds (0: do not wait).

    Pass the returned file's descriptor to a child (`pass_fds`) and the lock lives as long as the child."""
    import fcntl

    path = Path(directory) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+", encoding="utf-8")
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                handle.seek(0)
                holder = handle.read().strip() or "?"
                handle.close()
                raise DirectoryLocked(f"{path} is held by process {holder}") from None
            time.sleep(0.1)
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def note_lock_holder(handle: IO, pid: int) -> None:
    """Record the child that now holds an inherited lock (for the next runner's message)."""
    handle.seek(0)
    handle.truncate()
    handle.write(f"{pid}\n")
    handle.flush()
