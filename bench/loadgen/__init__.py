"""A load generator: many simulated executors speaking the real protocol to one server.

Modules, in the order a run uses them:
- `provision`: creates executor keys, executors and nodes in bulk through the service layer;
- `simulated`: one simulated executor (sync loop and held spec poll) over a kept HTTP pool;
- `worker`: a worker process running a share of the executors on its own event loop;
- `run`: starts workers, measures a window (latency, errors, server CPU), collects results;
- `scenarios`: P3 capacity, P1 pickup under load, P4 held polls, as rows of goal and measured.
"""
