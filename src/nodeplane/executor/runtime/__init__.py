"""The executor runtime shared by the agent and the operator: poll, reconcile, report."""
