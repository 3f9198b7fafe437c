"""Prometheus metrics of the control plane: the fleet read at scrape time, request latencies,
held spec polls, and the `/metrics` endpoint (docs/metrics.md lists every metric)."""
