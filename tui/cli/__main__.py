"""`python -m lemming.tui.cli` is the `lemming` command."""

from lemming.tui.cli import main

raise SystemExit(main())
