"""The control plane: store, domain services, GraphQL API, web UI and auth."""
