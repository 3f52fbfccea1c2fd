"""`python -m lemming.tui.bench` runs the benchmarks (as `lemming bench`)."""

from lemming.tui.bench import main

raise SystemExit(main())
