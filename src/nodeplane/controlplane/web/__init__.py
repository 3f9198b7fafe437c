"""The web UI: server-rendered pages over the GraphQL API, with a small script for live updates."""
