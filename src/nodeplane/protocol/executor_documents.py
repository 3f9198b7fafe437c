"""The GraphQL documents executors send (DESIGN §4), one text each.

They live in the protocol because both sides depend on the exact text: the agent and the
operator send it, and the control plane answers `SYNC_EXECUTOR` and `POLL_SPECS` without the
GraphQL executor when it recognizes them (controlplane/api/executor_calls.py). Changing a text
here is a protocol change: the control plane must keep recognizing what older executors send.
"""

SYNC_EXECUTOR = """
mutation Sync($input: JSON!) {
  syncExecutor(input: $input) { executor { id name } rejected { nodeId reason } }
}"""
POLL_SPECS = """
query Poll($known: JSON, $wait: Float!) {
  executorSpecs(known: $known, waitSeconds: $wait) {
    nodeId name revision spec deleted retainData
  }
}"""
CONFIRM_TEARDOWN = "mutation Confirm($id: UUID!) { confirmNodeTeardown(nodeId: $id) }"
REPORT_RUNTIME_EVENTS = "mutation Report($events: JSON!) { reportRuntimeEvents(events: $events) }"
POLL_LOG_SESSIONS = """
query LogSessions($known: [UUID!], $wait: Float!) {
  executorLogSessions(known: $known, waitSeconds: $wait) {
    sessionId nodeId role tail level follow
  }
}"""
POST_LOG_CHUNK = "mutation LogChunk($chunk: JSON!) { postLogChunk(chunk: $chunk) }"
