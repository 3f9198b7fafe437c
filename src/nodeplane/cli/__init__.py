"""The `nodeplane` command."""
