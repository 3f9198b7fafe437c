"""Samples a server's /healthz from a separate process while a test loads the server.

The sampler is its own process so that the test's own work (building documents, parsing answers)
does not delay the samples: what it measures is the server. It first samples the idle server, so
that a test can bound the slowdown the load causes rather than the machine's own speed (a slow CI
machine answered an idle /healthz in 20-30 ms, and that is not the server stalling).
"""

import json
import statistics
import subprocess
import sys
from dataclasses import dataclass
from types import TracebackType

_SAMPLER = r"""
import json, sys, time
import httpx
url, interval, minimum = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
samples = []
idle = []
stop = False
with httpx.Client(timeout=10) as client:
    try:
        client.get(url)  # open the kept connection before measuring
    except httpx.HTTPError:
        pass
    for _ in range(20):
        started = time.perf_counter()
        try:
            client.get(url)
        except httpx.HTTPError:
            pass
        idle.append(time.perf_counter() - started)
        time.sleep(interval)
    print("ready", flush=True)
    began = time.perf_counter()
    while True:
        started = time.perf_counter()
        try:
            status = client.get(url).status_code
        except httpx.HTTPError:
            status = 0  # no answer within the client's timeout
        samples.append([time.perf_counter() - started, status])
        if not stop and sys.stdin in __import__("select").select([sys.stdin], [], [], interval)[0]:
            stop = True
        elif stop:
            time.sleep(interval)
        if stop and time.perf_counter() - began >= minimum:
            break
print(json.dumps({"idle": idle, "samples": samples}))
"""


@dataclass(frozen=True)
class HealthzSamples:
    """Latencies (seconds) and statuses of the /healthz calls made while the sampler ran."""

    latencies: list[float]
    statuses: list[int]
    idle: list[float]

    @property
    def p95(self) -> float:
        """The 95th percentile latency."""
        return statistics.quantiles(self.latencies, n=20)[-1]

    @property
    def worst(self) -> float:
        """The slowest call."""
        return max(self.latencies)

    @property
    def idle_p95(self) -> float:
        """The 95th percentile latency of the idle server, sampled just before the load."""
        return statistics.quantiles(self.idle, n=20)[-1]

    @property
    def idle_worst(self) -> float:
        """The slowest call to the idle server."""
        return max(self.idle)

    def summary(self) -> str:
        """A line for assertion messages."""
        return (
            f"{len(self.latencies)} samples, median {statistics.median(self.latencies) * 1000:.1f} "
            f"ms, p95 {self.p95 * 1000:.1f} ms, max {self.worst * 1000:.1f} ms; idle: median "
            f"{statistics.median(self.idle) * 1000:.1f} ms, p95 {self.idle_p95 * 1000:.1f} ms, "
            f"max {self.idle_worst * 1000:.1f} ms"
        )


class HealthzSampler:
    """`with HealthzSampler(url) as sampler: ...` then `sampler.result`."""

    def __init__(self, base_url: str, interval: float = 0.02, minimum_s: float = 1.0) -> None:
        self.url = f"{base_url}/healthz"
        self.interval = interval
        self.minimum_s = minimum_s
        self.process: subprocess.Popen[str] | None = None
        self.result: HealthzSamples | None = None

    def __enter__(self) -> "HealthzSampler":
        self.process = subprocess.Popen(
            [sys.executable, "-c", _SAMPLER, self.url, str(self.interval), str(self.minimum_s)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "ready"
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self.process is not None
        out, _ = self.process.communicate("stop\n", timeout=120)
        answer = json.loads(out)
        samples = answer["samples"]
        self.result = HealthzSamples(
            [s[0] for s in samples], [s[1] for s in samples], answer["idle"]
        )
