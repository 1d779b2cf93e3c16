"""Stage modules: one per CLI subcommand (see pipeline/cli.py for their shape)."""
