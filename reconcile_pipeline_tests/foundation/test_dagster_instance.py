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


def _connections_opened(run) -> int:
    """New PostgreSQL connections opened by SQLAlchemy engines while `run()` runs."""
    from sqlalchemy import event
    from sqlalchemy.pool import Pool

    opened = []

    def count(dbapi_connection, record) -> None:
        opened.append(1)

    event.listen(Pool, "connect", count)
    try:
        run()
    finally:
        event.remove(Pool, "connect", count)  # on every pool, whichever engine owns it
    return len(opened)


def test_a_run_holds_its_storage_connections_open(project_dagster_database):
    """The project's storage keeps its connections open (issue 15, a run's fixed cost): a
    second run opens none; dagster_postgres's own opens one for every event (30 or so)."""

    @dg.asset
    def probe() -> int:
        return 1

    with dg.DagsterInstance.get() as instance:
        dg.materialize([probe], instance=instance)  # the tables and the pools exist
        events_before = len(instance.all_logs(instance.get_runs()[0].run_id))

        opened = _connections_opened(lambda: dg.materialize([probe], instance=instance))

    assert events_before > 10
    # None: the first run opened what the pools keep (at most POOL_SIZE per storage part).
    assert opened == 0


def test_a_pooled_connection_the_server_dropped_is_replaced(project_dagster_database):
    """A PostgreSQL restart (or an idle timeout) closes the pooled connections: the next
    operation reconnects instead of failing."""

    @dg.asset
    def probe() -> int:
        return 1

    admin = create_engine(project_dagster_database)
    with dg.DagsterInstance.get() as instance:
        assert dg.materialize([probe], instance=instance).success
        with admin.connect() as conn:
            dropped = conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalar_one()
        assert dropped >= 1  # the storage's held connections

        result = dg.materialize([probe], instance=instance)

        assert result.success
        assert len(instance.get_runs()) == 2
    admin.dispose()
