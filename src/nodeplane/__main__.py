"""`python -m nodeplane` runs the CLI."""

from nodeplane.cli.main import app

app()
