"""The project's dagster.yaml loads against PostgreSQL storage (dagster-postgres, psycopg2 URL)
with the queued run coordinator, and a run is recorded there."""

import dagster as dg
from sqlalchemy import create_engine, text


def test_instance_records_a_run_in_postgres(project_dagster_database):
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

    engine = create_engine(project_dagster_database)
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT run_id FROM runs")).scalars().all()
    engine.dispose()
    assert stored == [result.run_id]
