"""One file per schema revision, named ``NNNN_slug.py``; Alembic skips this one."""
