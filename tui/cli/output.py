"""What every command prints besides its own output: exit codes, errors and warnings.

Errors are one red line on stderr; model and file text is escaped so it can never
drive the terminal or be read as markup.
"""

from __future__ import annotations

from functools import lru_cache

from rich.console import Console
from rich.markup import escape

#: Exit codes of every `lemming` command.
EXIT_OK = 0
#: The command ran and failed: an invalid organisation, a run database problem, a run
#: that ended in an error, a probe that failed.
EXIT_FAIL = 1
#: The command cannot run as asked: a bad argument, an unknown name, a models.json that does not load.
EXIT_USAGE = 2
#: Interrupted by Ctrl-C (128 + SIGINT).
EXIT_INTERRUPTED = 130
#: The reader of our output went away (`lemming ... | head`; 128 + SIGPIPE).
EXIT_BROKEN_PIPE = 141


def line_console(*, stderr: bool = False) -> Console:
    """A console for progress lines: on a terminal it fits the window; piped or
    redirected (a file, `| grep`, a CI log) it prints one line per event, never wrapped
    inside a word, whatever COLUMNS says."""
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:
        console.soft_wrap = True
    return console


@lru_cache(maxsize=1)
def err_console() -> Console:
    """The console on stderr (one line per message when stderr is not a terminal)."""
    return line_console(stderr=True)


def fail(message: str, code: int = EXIT_FAIL) -> int:
    """Print `message` as one red line on stderr; return `code` for the command to exit with."""
    err_console().print(f"[red]{escape(message)}[/]", highlight=False)
    return code


def warn(message: str) -> None:
    """Print `message` as a yellow warning line on stderr."""
    err_console().print(f"[yellow]warning:[/] {escape(message)}", highlight=False)
