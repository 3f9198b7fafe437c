"""Executors: the runtime loops, the control-plane client, and the agent and operator backends."""
