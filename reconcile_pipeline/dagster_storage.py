"""Dagster's PostgreSQL storage, for what a reconcile run writes (issue 15: runs with no Dagster
tax). dagster.yaml selects it (`storage: custom:`, with `storage: postgres:`'s config).

Differences from `dagster_postgres.DagsterPostgresStorage` (the first three measured by
benchmarks/reconcile_throughput.py):

* **Connections held open.** dagster_postgres opens a new PostgreSQL connection for every
  operation outside the webserver (NullPool): an idle run wrote 90 events over 236 new
  connections, a third of its Dagster time. Here each storage part (runs, event log, schedules)
  keeps a few connections open per process and checks them before use (a PostgreSQL restart costs a
  reconnect, not an error); threads needing more at once (the daemon's) get overflow
  connections, closed when returned.
* **A range run's check result covers its windows.** The checks target partitioned assets, so
  Dagster plans each check once per window of a range run (a backfill) but records the check's
  one result for the run alone: every window's planned execution would stay planned, which the
  UI lists as "Skipped" (504 rows per check for a 7-day backfill). The check evaluated the state
  the whole range left, so its result is recorded on each window's planned execution of that
  run, in one statement (writing it as an event per window cost 6,060 events, two thirds of a
  7-day backfill's time). The event log keeps the one evaluation event: alerts go out once.
* **A range run's planned materializations in one statement.** Dagster plans a range run per
  asset and window (what marks a failed run's windows failed in the UI) and, with
  DAGSTER_EVENT_BATCH_SIZE set, hands them over in batches that dagster_postgres still writes
  one at a time: here each batch is one insert. The checks' planned evaluations, which every
  run hands over in the same way, are two inserts (the events, then their executions).
* **A batch is stored whole or not at all.** dagster_postgres commits each write of a batch
  apart; when one fails, Dagster stores the batch again one event at a time, duplicating what
  was written before the failure (a duplicate check execution even fails the run). Here a batch
  is one transaction. The price: its events become visible together at the commit, a few
  milliseconds after their storage ids were drawn, so a reader paging the whole event log by
  storage id could pass over them if another run's event committed in between. Only planned
  events and a range run's materializations come in batches; the project's sensors read check
  evaluations and run failures, never batched.
"""

import contextlib
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import sqlalchemy as db
from dagster._core.events import DagsterEventType
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.base_storage import DagsterStorage
from dagster._core.storage.event_log.schema import (
    AssetCheckExecutionsTable,
    SqlEventLogStorageTable,
)
from dagster._serdes import ConfigurableClassData, serialize_value
from dagster_postgres import DagsterPostgresStorage
from dagster_postgres.event_log import PostgresEventLogStorage
from dagster_postgres.run_storage import PostgresRunStorage
from dagster_postgres.schedule_storage import PostgresScheduleStorage
from dagster_postgres.utils import (
    create_pg_engine,
    get_token_provider_from_config,
    pg_url_from_config,
)

# Connections a storage part keeps open: an event write can take a second one while it holds
# the first (an asset event's index update), and a third covers a concurrent reader.
POOL_SIZE = 3
# Connections a storage part opens beyond those when threads need them at once (the daemon's,
# the webserver's); they close when returned.
MAX_OVERFLOW = 20
# Reconnect after an hour: a connection never outlives a server's idle timeouts by much.
POOL_RECYCLE_SECONDS = 3600


def _hold_connections(part: Any, postgres_url: str, token_provider: Any) -> None:
    """Give a storage part a pooled engine. The parts read `_engine` for every connection;
    dagster_postgres's own `optimize_for_webserver` swaps it the same way (without the
    pre-ping). The pooled connection closes when the instance disposes of the part."""
    part._engine.dispose()
    engine = create_pg_engine(
        postgres_url,
        token_provider,
        isolation_level="AUTOCOMMIT",
        pool_size=POOL_SIZE,
        max_overflow=MAX_OVERFLOW,
        pool_recycle=POOL_RECYCLE_SECONDS,
        pool_pre_ping=True,
    )
    part._engine = engine
    dispose_part = part.dispose

    def dispose() -> None:
        dispose_part()
        engine.dispose()

    part.dispose = dispose


class RangeCheckEventLogStorage(PostgresEventLogStorage):
    """PostgreSQL event log storage recording a range run's check result on every window, and
    a range run's planned materializations (one per asset and window) in one statement; a
    batch of events is stored whole or not at all."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._batch = threading.local()  # before: the parent's set-up connects
        super().__init__(*args, **kwargs)

    def _connect(self) -> Any:
        """Inside `store_event_batch`: the batch's transaction, for every write it makes."""
        shared = getattr(self._batch, "connection", None)
        if shared is not None:
            return contextlib.nullcontext(shared)
        return super()._connect()

    @contextlib.contextmanager
    def _batch_transaction(self) -> Iterator[None]:
        if getattr(self._batch, "connection", None) is not None:  # already inside one
            yield
            return
        with super()._connect() as conn:
            conn = conn.execution_options(isolation_level="READ COMMITTED")  # noqa: PLW2901
            with conn.begin():
                self._batch.connection = conn
                try:
                    yield
                finally:
                    self._batch.connection = None

    def store_event_batch(self, events: Sequence[Any]) -> None:
        """Dagster hands over a range run's planned materializations (and its checks' planned
        evaluations) as batches, with DAGSTER_EVENT_BATCH_SIZE set; dagster_postgres stores
        planned events one at a time (2,016 for a 7-day backfill of four assets). Here the
        planned materializations are one insert, then the asset index updated with each asset's
        last event, as dagster_postgres does for a batch of materializations (the index keeps
        the latest event only).

        The whole batch is one transaction: when a write fails, nothing of it is stored, and
        Dagster's fallback (storing the batch again one event at a time) stores each event once.
        dagster_postgres commits each write apart, so the fallback would store again what was
        written before the failure (a duplicate check execution even fails the run)."""
        planned: list[Any] = []
        planned_checks: list[Any] = []
        others: list[Any] = []
        for event in events:
            kind = event.dagster_event_type
            if kind == DagsterEventType.ASSET_MATERIALIZATION_PLANNED:
                planned.append(event)
            elif kind == DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED:
                planned_checks.append(event)
            else:
                others.append(event)
        with self._batch_transaction():
            if others:  # stored as dagster_postgres does
                super().store_event_batch(others)
            if planned_checks:
                self._store_planned_check_evaluations(planned_checks)
            if planned:
                self._store_planned_materializations(planned)

    def _insert_events(self, conn: Any, events: Sequence[Any]) -> list[int]:
        """`events` inserted into the event log in one statement; their storage ids, in order."""
        inserted = conn.execute(
            self.prepare_insert_event_batch(events).returning(SqlEventLogStorageTable.c.id)
        )
        return [int(row[0]) for row in inserted.fetchall()]

    def _store_planned_check_evaluations(self, events: Sequence[Any]) -> None:
        """The checks' planned evaluations (every run plans each of its checks) in two
        statements: the events, then one planned execution per check and partition, as
        `SqlEventLogStorage._store_asset_check_evaluation_planned` writes them one event at a
        time (12 events, 36 statements, for a one-table client's run)."""
        with self.index_transaction() as conn:
            event_ids = self._insert_events(conn, events)
            executions = []
            for event, event_id in zip(events, event_ids, strict=True):
                planned = event.dagster_event.event_specific_data
                partitions = (
                    planned.partitions_subset.get_partition_keys()
                    if planned.partitions_subset
                    else [None]
                )
                stored = serialize_value(event)
                executions += [
                    {
                        "asset_key": planned.asset_key.to_string(),
                        "check_name": planned.check_name,
                        "partition": partition,
                        "run_id": event.run_id,
                        "execution_status": AssetCheckExecutionRecordStatus.PLANNED.value,
                        "evaluation_event": stored,
                        "evaluation_event_timestamp": self._event_insert_timestamp(event),
                        "evaluation_event_storage_id": event_id,
                    }
                    for partition in partitions
                ]
            conn.execute(AssetCheckExecutionsTable.insert().values(executions))

    def _store_planned_materializations(self, events: Sequence[Any]) -> None:
        with self.index_transaction() as conn:
            event_ids = self._insert_events(conn, events)
            last_by_asset = {
                event.dagster_event.asset_key: (event, event_id)
                for event, event_id in zip(events, event_ids, strict=True)
            }
            self._store_asset_event_tags(conn, events, event_ids)
            for event, event_id in last_by_asset.values():
                self._store_asset_event(conn, event, event_id)

    def _update_asset_check_evaluation(self, event: Any, event_id: int | None) -> None:
        evaluation = event.dagster_event.event_specific_data
        if evaluation.partition is None and self._resolve_planned_windows(
            event, event_id, evaluation
        ):
            return
        super()._update_asset_check_evaluation(event, event_id)

    def _resolve_planned_windows(self, event: Any, event_id: int | None, evaluation: Any) -> int:
        """Record the run-wide `evaluation` on the executions its run planned per window and
        left planned; how many (0: the run planned none, Dagster records it as usual)."""
        table = AssetCheckExecutionsTable
        status = (
            AssetCheckExecutionRecordStatus.SUCCEEDED
            if evaluation.passed
            else AssetCheckExecutionRecordStatus.FAILED
        )
        target = evaluation.target_materialization_data
        with self.index_connection() as conn:
            return conn.execute(
                table.update()
                .where(
                    db.and_(
                        table.c.asset_key == evaluation.asset_key.to_string(),
                        table.c.check_name == evaluation.check_name,
                        table.c.run_id == event.run_id,
                        table.c.partition.isnot(None),
                        table.c.execution_status == AssetCheckExecutionRecordStatus.PLANNED.value,
                    )
                )
                .values(
                    execution_status=status.value,
                    evaluation_event=serialize_value(event),
                    evaluation_event_timestamp=self._event_insert_timestamp(event),
                    evaluation_event_storage_id=event_id,
                    materialization_event_storage_id=target.storage_id if target else None,
                )
            ).rowcount


class PooledPostgresStorage(DagsterPostgresStorage):
    """`DagsterPostgresStorage` with pooled connections and range-wide check results."""

    def __init__(
        self,
        postgres_url: str,
        should_autocreate_tables: bool = True,
        inst_data: ConfigurableClassData | None = None,
        token_provider: Any = None,
    ) -> None:
        # DagsterPostgresStorage.__init__, with this module's event log storage.
        self.postgres_url = postgres_url
        self.should_autocreate_tables = should_autocreate_tables
        self._inst_data = inst_data
        self._run_storage = PostgresRunStorage(
            postgres_url, should_autocreate_tables, token_provider=token_provider
        )
        self._event_log_storage = RangeCheckEventLogStorage(
            postgres_url, should_autocreate_tables, token_provider=token_provider
        )
        self._schedule_storage = PostgresScheduleStorage(
            postgres_url, should_autocreate_tables, token_provider=token_provider
        )
        DagsterStorage.__init__(self)
        for part in (self._run_storage, self._event_log_storage, self._schedule_storage):
            _hold_connections(part, postgres_url, token_provider)

    @classmethod
    def from_config_value(  # type: ignore[override]
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> "PooledPostgresStorage":
        return cls(
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )
