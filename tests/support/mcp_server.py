"""A real MCP server for the tests, written with the official SDK.

    python tests/support/mcp_server.py [--http PORT] [--pidfile PATH] [--crash-at-start] [--start-delay SECONDS]

Tools: add(a, b), echo(text), env(name) (what the server's environment holds), big(n),
slow(seconds), crash() (the process exits mid-call).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from mcp.server.mcpserver import MCPServer

app = MCPServer("testserver")


@app.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@app.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@app.tool()
def env(name: str) -> str:
    """The value of an environment variable in the server's process, or <unset>."""
    return os.environ.get(name, "<unset>")


@app.tool()
def big(n: int) -> str:
    """n characters of text."""
    return "x" * n


@app.tool()
def slow(seconds: float) -> str:
    """Sleep, then answer."""
    time.sleep(seconds)
    return "done"


@app.tool()
def crash() -> str:
    """The process exits in the middle of the call."""
    sys.stderr.write("crashing on purpose\n")
    sys.stderr.flush()
    os._exit(3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", type=int, default=None)
    parser.add_argument("--pidfile", default=None)
    parser.add_argument("--crash-at-start", action="store_true")
    parser.add_argument("--start-delay", type=float, default=0.0)
    args = parser.parse_args()
    time.sleep(args.start_delay)  # a server slow to start (the run must not wait for it)
    if args.pidfile:
        with open(args.pidfile, "a") as f:
            f.write(f"{os.getpid()}\n")
    if args.crash_at_start:
        sys.stderr.write("refusing to start: --crash-at-start\n")
        raise SystemExit(2)
    if args.http is not None:
        app.run(transport="streamable-http", host="127.0.0.1", port=args.http)
    else:
        app.run()


if __name__ == "__main__":
    main()
