"""Persistence: SQLAlchemy models, engine set-up, Alembic migrations and units of work."""
