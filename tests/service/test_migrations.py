"""The Alembic migrations build exactly the schema the models describe, on both engines."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from avatar_studio.service.db import create_engine, migrate
from avatar_studio.service.models import Base


def test_migrated_schema_matches_the_models(db_url: str) -> None:
    engine = create_engine(db_url)
    migrate(engine)
    migrate(engine)  # a second run is a no-op, as every process start does it
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == []
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one() == "0001"
    columns = {c["name"] for c in sa.inspect(engine).get_columns("avatar_jobs")}
    assert {"id", "user_id", "provider", "provider_job_id", "status", "progress", "created_at", "updated_at"} <= columns
    if engine.dialect.name == "postgresql":
        types = {c["name"]: type(c["type"]).__name__ for c in sa.inspect(engine).get_columns("avatar_assets")}
        assert types["blendshape_map"] == "JSONB" and types["id"] == "UUID"
    engine.dispose()
