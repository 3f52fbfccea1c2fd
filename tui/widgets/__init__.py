"""The control room's panes, one widget per file."""
