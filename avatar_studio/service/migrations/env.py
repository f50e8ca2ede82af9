"""Alembic environment: migrations run on the connection :func:`avatar_studio.service.db.migrate` passes."""

from __future__ import annotations

from alembic import context

from avatar_studio.service.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through avatar_studio.service.db.migrate(engine)")
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
