"""The agent: runs node specs as native systemd units (or supervised processes) on a host."""
