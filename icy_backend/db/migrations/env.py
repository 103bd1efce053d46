"""Alembic environment: always run with a connection handed in by ``icy_backend.db.migrate``."""

from __future__ import annotations

from alembic import context

from icy_backend.db.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only reachable by running the alembic CLI directly
    raise RuntimeError("run migrations with `icy-backend migrate`")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
