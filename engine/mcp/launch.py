"""Start an MCP server so that it dies with the run:
`python -m lemming.engine.mcp.launch [--pidfile PATH] CMD ARGS...`.

Sets PR_SET_PDEATHSIG (SIGKILL) and then execs CMD, so a stdio server is killed by the
kernel when the run that started it ends, even by kill -9 (the SDK already puts it in
its own session, out of the terminal's reach). The setting survives exec, and so does the
process id, which `--pidfile` writes for the control room's MCP view.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> int:
    pidfile = None
    if argv[:1] == ["--pidfile"] and len(argv) > 1:
        pidfile, argv = argv[1], argv[2:]
    if not argv:
        print("usage: python -m lemming.engine.mcp.launch CMD [ARGS...]", file=sys.stderr)
        return 2
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            print(f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(ctypes.get_errno())}", file=sys.stderr)
            return 1
        if os.getppid() != parent:  # the run died before the setting took
            return 1
    if pidfile is not None:
        try:
            with open(pidfile, "w") as f:
                f.write(f"{os.getpid()}\n")
        except OSError:
            pass  # the pid is for showing only
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        print(f"cannot start {argv[0]!r}: {exc.strerror}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
