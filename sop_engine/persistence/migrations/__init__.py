"""Alembic migrations of the engine's schema, shipped inside the package.

They run programmatically through :mod:`sop_engine.persistence.migrate` (``sop-engine db
upgrade``); there is no ``alembic.ini``. To write the next revision, point an engine at a
database migrated to head and let Alembic compare it with :mod:`sop_engine.persistence.tables`::

    from alembic import command
    from sop_engine.persistence.db import make_engine
    from sop_engine.persistence.migrate import alembic_config, upgrade

    engine = make_engine("sqlite:////tmp/schema.sqlite3")
    upgrade(engine)
    with engine.connect() as connection:
        command.revision(
            alembic_config(connection), message="what changes", autogenerate=True, rev_id="0002"
        )

then review the file by hand: it must run on SQLite (batch operations) and on PostgreSQL.
"""
