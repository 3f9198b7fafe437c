"""The GraphQL API at POST /graphql."""
