"""The project's dagster.yaml loads against PostgreSQL storage (dagster-postgres, psycopg2 URL)
with the queued run coordinator, and a run is recorded there."""

import shutil

import dagster as dg
from sqlalchemy import create_engine, text

from reconcile_pipeline.db import urls
from reconcile_pipeline.instance import instance_yaml


def test_instance_records_a_run_in_postgres(tmp_path, monkeypatch, postgres_server):
    database = postgres_server.create_database()
    try:
        storage_url = urls.dagster_storage_url(postgres_server.url(database))
        dagster_home = tmp_path / "dagster_home"
        dagster_home.mkdir()
        shutil.copyfile(instance_yaml(), dagster_home / "dagster.yaml")
        monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
        monkeypatch.setenv("DAGSTER_POSTGRES_URL", storage_url)

        @dg.asset
        def probe() -> int:
            return 1

        with dg.DagsterInstance.get() as instance:
            coordinator = instance.run_coordinator
            assert type(coordinator).__name__ == "QueuedRunCoordinator"
            # Its per-base limits (tags and pools) are tested in dagster/test_concurrency.py.
            result = dg.materialize([probe], instance=instance)
            assert result.success
            run_ids = [run.run_id for run in instance.get_runs()]
            assert run_ids == [result.run_id]

        engine = create_engine(postgres_server.url(database))
        with engine.connect() as conn:
            stored = conn.execute(text("SELECT run_id FROM runs")).scalars().all()
        engine.dispose()
        assert stored == [result.run_id]
    finally:
        postgres_server.drop_database(database)
