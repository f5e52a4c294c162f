"""The system's process commands, read from the Procfile: `make`, `make run`, the tests and the benchmark start them from here.

`python -m scripts.procfile NAME` replaces itself with the NAME entry's process (`make worker` does).
"""
import os
import shlex
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


def main() -> None:
    """Run the Procfile entry named on the command line in this process, from the project's folder."""
    known = commands()
    if len(sys.argv) != 2 or sys.argv[1] not in known:
        raise SystemExit(f"usage: python -m scripts.procfile {{{','.join(known)}}}")
    os.chdir(ROOT)
    os.execv(known[sys.argv[1]][0], known[sys.argv[1]])


if __name__ == "__main__":
    main()
