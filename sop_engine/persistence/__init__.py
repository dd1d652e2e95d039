"""Persistence: SQLAlchemy 2 tables, database engines and Alembic migrations."""
