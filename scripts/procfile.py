"""The system's process commands, read from the Procfile: `make`, `make run`, the tests and the benchmark start them from here.

`python -m scripts.procfile NAME` replaces itself with the NAME entry's process (`make worker` does).
"""
import ctypes
import logging
import os
import shlex
import signal
import sys

from config import ROOT


def commands() -> dict[str, list[str]]:
    """Each Procfile entry's command as an argument list, `python` being this interpreter (the virtualenv's)."""
    entries = {}
    with open(os.path.join(ROOT, "Procfile")) as procfile:
        for line in procfile:
            name, colon, command = line.partition(":")
            if colon and not line.startswith("#"):
                argv = shlex.split(command)
                entries[name.strip()] = [sys.executable if argv[0] == "python" else argv[0], *argv[1:]]
    return entries


PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies


def stop_with_parent(parent: int) -> None:
    """Have the kernel send this process SIGTERM (a graceful stop) when `parent` ends, so none runs on unsupervised.

    Killed (SIGKILL, the OOM killer), a supervisor cannot stop what it started; restarted, it would
    start the same again beside it. The signal comes when the parent's thread that forked ends, and
    survives exec (not of a set-user-ID program). Linux only; elsewhere, nothing changes.
    """
    if sys.platform != "linux":
        return
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
        logging.getLogger(__name__).warning("this process will not stop by itself when its parent dies: prctl "
                                            "failed (%s)", os.strerror(ctypes.get_errno()))
    if os.getppid() != parent:  # it ended before the request was in place
        os.kill(os.getpid(), signal.SIGTERM)


def main() -> None:
    """Run the Procfile entry named on the command line in this process, from the project's folder."""
    known = commands()
    if len(sys.argv) != 2 or sys.argv[1] not in known:
        raise SystemExit(f"usage: python -m scripts.procfile {{{','.join(known)}}}")
    os.chdir(ROOT)
    os.execv(known[sys.argv[1]][0], known[sys.argv[1]])


if __name__ == "__main__":
    main()
