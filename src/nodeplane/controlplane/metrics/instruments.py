"""The process's own instruments: request latencies and held spec polls.

Everything about nodes and executors is read from the database at scrape time instead
(fleet_collector.py): a sync is the hot path and must not pay for metrics. Requests pay one
histogram observation each, and a held poll one increment and one decrement.

With `nodeplane server --workers N` each worker writes these to files in a directory shared by
the workers (prometheus_client's multiprocess mode, see multiprocess.py), so a scrape answered by
any worker reports the sum over all of them.
"""

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

# `_created` series double the output for nothing a dashboard uses.
disable_created_metrics()  # type: ignore[no-untyped-call]

REQUEST_DURATION_SECONDS = "nodeplane_http_request_duration_seconds"
SPEC_POLLS_HELD = "nodeplane_spec_polls_held"
EVENTS_PRUNED = "nodeplane_events_pruned"

# Up to a spec long-poll's longest wait (30 s), which `executorSpecs` requests take on purpose.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

request_duration = Histogram(
    REQUEST_DURATION_SECONDS,
    "Time to answer an HTTP request, by route template, method and GraphQL root field.",
    ["route", "method", "operation"],
    buckets=LATENCY_BUCKETS,
)

spec_polls_held = Gauge(
    SPEC_POLLS_HELD,
    "Executor spec long-polls held open, waiting for a change or their timeout.",
    # Summed over live workers; a dead worker's polls are gone with it.
    multiprocess_mode="livesum",
)

events_pruned = Counter(
    EVENTS_PRUNED,
    "Events deleted by the retention pruner, by the limit that removed them (age or count).",
    ["reason"],
)

POLL_LOOKS = "nodeplane_spec_poll_looks"
SYNCS = "nodeplane_syncs"

syncs = Counter(
    SYNCS,
    "Executor heartbeats (syncExecutor) answered, by outcome: steady (the executor repeated what "
    "is stored; answered from one read, its times written behind), kept (it repeated, byte for "
    "byte, a steady sync this process read, unchanged since: no read), moved (metric values "
    "alone moved: stored with the other such syncs that arrived meanwhile, one transaction for "
    "all) or written (anything else changed: a first sync, a status, a new instance).",
    ["outcome"],
)

MOVED_SYNC_BATCHES = "nodeplane_moved_sync_batches"

moved_sync_batches = Counter(
    MOVED_SYNC_BATCHES,
    "Transactions that stored syncs whose metric values alone moved (the syncs counted as "
    "moved in nodeplane_syncs_total, and those handed on to be written); under load each "
    "carries many.",
)

poll_looks = Counter(
    POLL_LOOKS,
    "Executor spec polls' looks at what their executor lacks, by source: kept (what an earlier "
    "poll read, unchanged since by any write: no statement) or database.",
    ["source"],
)

EXECUTOR_CALLS = "nodeplane_executor_calls"

executor_calls = Counter(
    EXECUTOR_CALLS,
    "Requests that carried one of the executors' own documents, by operation and by the path "
    "that answered: direct (without the GraphQL executor) or graphql (handed on: no executor key, "
    "or a key that could not be checked).",
    ["operation", "path"],
)
