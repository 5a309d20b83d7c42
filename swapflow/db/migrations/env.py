"""Alembic environment: the URL comes from the caller (swapflow.db.migrate) or from settings."""

from __future__ import annotations

from alembic import context

from swapflow.db.engine import create_sync_engine, is_sqlite
from swapflow.db.schema import metadata
from swapflow.settings import get_settings

config = context.config
url = config.attributes.get("database_url") or get_settings().effective_database_url

engine = create_sync_engine(url)
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=is_sqlite(url),  # SQLite alters tables by copying them
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
engine.dispose()
