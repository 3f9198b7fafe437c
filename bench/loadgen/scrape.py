"""A Prometheus scrape of a large fleet, and what it does to the requests around it.

The node and executor metrics are read from the database and written at scrape time, one
series per node and phase, process and gauge: about 17 samples a node, 46 MB of text at
15,000 nodes. The work is the server's own event loop's, so the row reports, besides the
scrape's duration, how long a health check sent every few milliseconds while it runs waits:
a sync arriving then waits as long.

The scrape is read by a process of its own: read here, 46 MB of text would hold this process's
interpreter lock and delay the probe's own requests, which would then be counted as the
server's (seen while building this).
"""

import subprocess
import sys
import threading
import time

import httpx

from bench.loadgen.run import summary
from bench.loadgen.scenarios import P99_GOAL, Row
from bench.loadgen.stats import percentile
from bench.loadgen.target import METRICS_TOKEN, Target

# Seconds between the probe's health checks.
PROBE_GAP = 0.005
SCRAPES = 3

_READ = """
import sys, urllib.request
request = urllib.request.Request(sys.argv[1], headers={"authorization": "Bearer " + sys.argv[2]})
size = lines = 0
with urllib.request.urlopen(request, timeout=300) as response:
    while chunk := response.read(1 << 20):
        size += len(chunk)
        lines += chunk.count(b"\\n")
print(size, lines)
"""


def scrape(t: Target, prefix: str = "lg") -> Row:
    """Scrape `/metrics` `SCRAPES` times with the fleet provisioned as `prefix` at rest."""
    executors = len(t.fleets.get(prefix, []))
    durations: list[float] = []
    waits: list[float] = []
    size = lines = 0
    for _ in range(SCRAPES):
        done = threading.Event()
        probe = threading.Thread(target=_probe, args=(t.server.url, done, waits))
        probe.start()
        try:
            time.sleep(0.2)
            began = time.monotonic()
            out = subprocess.run(
                [sys.executable, "-c", _READ, f"{t.server.url}/metrics", METRICS_TOKEN],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            durations.append(time.monotonic() - began)
        finally:
            done.set()
            probe.join()
        size, lines = (int(n) for n in out.split())
    return Row(
        "scrape",
        t.label,
        f"{executors} x 10 nodes at rest",
        "a request during a scrape waits < 100 ms (p99)",
        f"scrape {min(durations):.1f} to {max(durations):.1f} s ({size / 2**20:.0f} MiB, "
        f"{lines:,} lines); health checks during {SCRAPES} scrapes: p50 / p99 "
        f"{summary(waits)}, max {max(waits) * 1000:.0f} ms ({len(waits)} requests)",
        bool(waits) and percentile(waits, 99) < P99_GOAL,
    )


def _probe(url: str, done: threading.Event, waits: list[float]) -> None:
    """Health checks every `PROBE_GAP` s until `done`, each one's time appended to `waits`."""
    with httpx.Client(base_url=url, timeout=60) as client:
        while not done.is_set():
            sent = time.monotonic()
            client.get("/healthz").raise_for_status()
            waits.append(time.monotonic() - sent)
            time.sleep(PROBE_GAP)
