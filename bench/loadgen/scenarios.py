"""The issue's load goals as scenarios; each returns rows of goal beside measured (issue 8)."""

import time
from collections import Counter
from dataclasses import dataclass

from bench.loadgen.run import LoadRun, lifecycle_actions, measured, summary
from bench.loadgen.stats import percentile
from bench.loadgen.target import Target
from bench.loadgen.worker import LoadOptions

P99_GOAL = 0.100
NODES_PER_EXECUTOR = 10
SYNC_INTERVAL = 5.0


@dataclass(frozen=True)
class Row:
    """One line of the results table."""

    goal_id: str
    backend: str
    load: str
    goal: str
    measured: str
    met: bool | None = None

    def markdown(self) -> str:
        """The row as a Markdown table line."""
        verdict = {True: "yes", False: "**no**", None: "-"}[self.met]
        return (
            f"| {self.goal_id} | {self.backend} | {self.load} | {self.goal} | {self.measured} "
            f"| {verdict} |"
        )


@dataclass(frozen=True)
class Sizes:
    """How big and long the scenarios are (`QUICK` for development, `FULL` for the record)."""

    ramp: tuple[int, ...]
    # Seconds from the start before the window, at least; more until the start is absorbed
    # (LoadRun.settle), at most `settle_cap`.
    warmup: float
    settle_cap: float
    window: float
    # Lifecycle actions a second during a P3 window (P1), and while polls are held (P4): a
    # p99 over 100 actions or fewer is their slowest one (nearest rank), so the full run sends
    # more than 100 in each.
    action_rate: float
    held_polls: tuple[int, ...]
    hold: float
    wake_rate: float


QUICK = Sizes(
    ramp=(50, 100),
    warmup=6.0,
    settle_cap=20.0,
    window=5.0,
    action_rate=1.0,
    held_polls=(300,),
    hold=4.0,
    wake_rate=2.0,
)
FULL = Sizes(
    ramp=(200, 400, 600, 800, 1000, 1200, 1500, 2000),
    warmup=25.0,
    settle_cap=120.0,
    window=30.0,
    action_rate=4.0,
    held_polls=(2_000, 5_000, 10_000),
    hold=12.0,
    wake_rate=10.0,
)


def _errors(errors: Counter[str], action_errors: int = 0, missing: int = 0) -> str:
    counts = dict(errors)
    if action_errors:
        counts["lifecycle action failed"] = action_errors
    if missing:
        counts["action never picked up"] = missing
    return ", ".join(f"{k} x{v}" for k, v in sorted(counts.items())) or "none"


def capacity(t: Target, sizes: Sizes) -> list[Row]:
    """P3 (syncExecutor p99 as executors ramp up) and P1 (pickup under that load), per step.

    Each step runs `count` executors x 10 nodes at a 5 s cadence, waits until the fleet's start
    is absorbed (every executor polled and synced, and one sync interval answered in time;
    `LoadRun.settle`, at most `sizes.settle_cap`), then measures a window while lifecycle
    actions flip random nodes. The row says how long the start took, or that it was not
    absorbed (the window then measures its backlog).
    The ramp stops at the first step that misses the goal: larger fleets only do worse.
    """
    rows: list[Row] = []
    held: int | None = None
    cpu_per_sync = ""
    for count in sizes.ramp:
        specs = t.fleet("lg", count, NODES_PER_EXECUTOR)
        run = LoadRun(
            t.server.url, specs, LoadOptions(sync_interval=SYNC_INTERVAL), slow_after=P99_GOAL
        )
        run.start()
        try:
            settled = run.settle(sizes.warmup, SYNC_INTERVAL, sizes.settle_cap)
            node_ids = [n for s in specs for n in s.node_ids]
            with (
                measured(t.cpu_seconds, t.database_pids) as window,
                lifecycle_actions(
                    t.server.url, t.token, node_ids, sizes.action_rate, t.stopped
                ) as actions,
            ):
                time.sleep(sizes.window)
            time.sleep(2.0)  # syncs and pickups from the window's end still answer
        finally:
            report = run.stop()
        latencies = window.syncs(report)
        answered = window.answered(report)
        unfinished = len(latencies) - answered
        seconds = window.ended - window.began
        pickups, missing = actions.pickup_seconds(report)
        window_errors = report.errors_between(window.began, window.ended + 2.0)
        # The start (every executor's first sync within one interval, each a write) is reported
        # apart: it is the load of a whole fleet starting at once, not of the fleet running.
        start_up = _errors(report.errors_between(run.started_at, window.began))
        absorbed = (
            f"start absorbed in {settled:.0f} s"
            if settled is not None
            else f"start not absorbed in {sizes.settle_cap:.0f} s"
        )
        errors = window_errors.total() + actions.errors + missing
        ok = percentile(latencies, 99) < P99_GOAL and errors == 0 and unfinished == 0
        per_sync = window.server_cpu * 1000 / max(answered, 1)
        database = (
            f" + database {window.database_cpu * 1000 / max(answered, 1):.1f}"
            if t.backend == "postgresql"
            else ""
        )
        load = f"{count} x {NODES_PER_EXECUTOR} ({count / SYNC_INTERVAL:.0f} syncs/s)"
        rows.append(
            Row(
                "P3",
                t.label,
                load,
                "syncExecutor p99 < 100 ms, no errors",
                f"p50 / p99 {summary(latencies)} ({len(latencies)} syncs"
                + (f", {unfinished} unanswered at stop" if unfinished else "")
                + f"); {answered / seconds:.0f} syncs/s answered; server CPU {per_sync:.1f} ms"
                f"/sync{database} ({window.server_cpu / seconds:.0%} of a core); load generator "
                f"{report.cpu_seconds / (time.monotonic() - run.started_at):.0%} of a core; "
                f"errors: {_errors(window_errors)}; {absorbed}"
                + (f"; in the start before the window: {start_up}" if start_up != "none" else ""),
                ok,
            )
        )
        rows.append(
            Row(
                "P1",
                t.label,
                load,
                "action → held poll returns it, p99 < 100 ms",
                f"p50 / p99 {summary(pickups)} ({len(pickups)} actions); the action's own "
                f"request {summary(actions.answers)}; errors: "
                f"{_errors(Counter(), actions.errors, missing)}",
                bool(pickups) and percentile(pickups, 99) < P99_GOAL and missing == 0,
            )
        )
        if not ok:
            break
        held, cpu_per_sync = count, f"{per_sync:.1f}"
    rows.append(
        Row(
            "P3",
            t.label,
            f"ramp {', '.join(map(str, sizes.ramp))}",
            "2,000 executors hold p99 < 100 ms",
            f"largest count holding it: {held if held is not None else 'none'}"
            + (f" (server CPU {cpu_per_sync} ms/sync there)" if held is not None else ""),
            held is not None and held >= 2000,
        )
    )
    return rows


def held_polls_summary(backend: str, rows: list[Row], counts: tuple[int, ...]) -> Row:
    """The largest held-poll count whose wake row met the goal."""
    woke = [c for c, r in zip(counts, [r for r in rows if "wake" in r.goal], strict=True) if r.met]
    return Row(
        "P4",
        backend,
        f"ramp {', '.join(map(str, counts))} held polls",
        "10,000 held polls on one process, wake p99 < 100 ms",
        f"largest count holding it: {max(woke) if woke else 'none'}",
        bool(woke) and max(woke) >= 10_000,
    )


def held_polls(t: Target, sizes: Sizes, count: int) -> list[Row]:
    """P4: `count` executors (one node each) hold a spec poll; server memory per held poll
    from its RSS before and after, and how fast a commit wakes one."""
    specs = t.fleet("hp", count, nodes=1)
    time.sleep(1.0)
    rss_before = t.rss_bytes()
    # The server takes in some tens of new polls a second (each authenticates, and a key's
    # first use is a write): connect them over a spread it can
    # follow, so the memory is measured with every poll held rather than queued.
    spread = max(5.0, count / 50)
    options = LoadOptions(sync_interval=None, spread=spread, known_from_start=True)
    run = LoadRun(t.server.url, specs, options, per_worker=2500)
    run.start()
    try:
        time.sleep(spread + 3.0)  # every executor holds its poll
        rss_held = t.rss_bytes()
        node_ids = [n for s in specs for n in s.node_ids]
        with lifecycle_actions(
            t.server.url, t.token, node_ids, sizes.wake_rate, t.stopped
        ) as actions:
            time.sleep(sizes.hold)
        time.sleep(1.0)
    finally:
        report = run.stop()
    wakes, missing = actions.pickup_seconds(report)
    per_poll = (rss_held - rss_before) / count
    return [
        Row(
            "P4",
            t.label,
            f"{count} held polls",
            "< 50 KB server memory per held poll",
            f"{per_poll / 1024:.1f} KB (RSS {rss_before / 2**20:.0f} → {rss_held / 2**20:.0f} MiB)",
            per_poll < 50 * 1024,
        ),
        Row(
            "P4",
            t.label,
            f"{count} held polls",
            "wake p99 < 100 ms",
            f"p50 / p99 {summary(wakes)} ({len(wakes)} actions); errors: "
            f"{_errors(report.errors, actions.errors, missing)}",
            bool(wakes) and percentile(wakes, 99) < P99_GOAL and missing == 0,
        ),
    ]
