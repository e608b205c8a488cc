"""`python -m vssbench` is the `bench` command (and the entry point for torchrun)."""

from vssbench.cli import main

raise SystemExit(main())
