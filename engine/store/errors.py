"""What goes wrong with a run database, said in one line a person can act on."""

from __future__ import annotations

from pathlib import Path


class StoreError(Exception):
    """Something is wrong with the run database; the message is one line a person can act on."""


class UnknownLayout(StoreError):
    """A row uses a layout code this reader has not loaded (a newer writer added it)."""


def sqlite_error(path: Path, e: BaseException) -> StoreError:
    """The one-line StoreError for a sqlite3 error on the database at `path`."""
    msg = str(e)
    low = msg.lower()
    if Path(path).is_dir():  # SQLite says only "disk I/O error" or "unable to open"
        return StoreError(f"{path} is a folder, not a run database; move it away or choose another --db")
    if "locked" in low or "busy" in low:
        return StoreError(f"{path} is locked by another process; try again when it is done")
    if "not a database" in low or "malformed" in low or "corrupt" in low:
        return StoreError(f"{path} is corrupt or not a LeMMing run database ({msg}); move it away or choose another --db")
    if "readonly" in low or "read-only" in low:
        return StoreError(f"{path} is read-only here ({msg})")
    if "unable to open" in low:
        return StoreError(f"cannot open {path} ({msg}); check the folder exists and is writable")
    if "disk" in low and "full" in low:
        return StoreError(f"{path}: the disk is full ({msg})")
    return StoreError(f"{path}: database error: {msg}")
