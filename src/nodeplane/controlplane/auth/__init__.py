"""Authentication and authorization: principals, passwords, tokens, sessions and API keys."""
