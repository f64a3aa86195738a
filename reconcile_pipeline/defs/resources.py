"""The PostgreSQL resource: one long-lived SQLAlchemy engine per run, fail-fast on bad config,
and the run-wide per-base exclusion every run holds from its setup to its teardown."""


import dagster as dg
from pydantic import Field, PrivateAttr
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from reconcile_pipeline.db import urls
from reconcile_pipeline.db.base_lock import BaseRunLock
from reconcile_pipeline.defs.naming import BASE_TAG
from reconcile_pipeline.engine.mapping import TableMapping
from reconcile_pipeline.engine.repository import Repository
from reconcile_pipeline.instance import current_worker
from reconcile_pipeline.worker_gc import freeze_loaded_objects


def _run_base(run: dg.DagsterRun | None) -> str | None:
    """The base a run reconciles: its tag (every job of a client sets it), else the client
    named by the first key of its asset selection (the UI's asset-graph runs carry no job
    tags), else the project file's only client's."""
    from reconcile_pipeline.defs.project import client_by_key, clients

    if run is not None and run.tags.get(BASE_TAG):
        return run.tags[BASE_TAG]
    selection = sorted(run.asset_selection or (), key=str) if run is not None else []
    for key in selection:
        try:
            return client_by_key(key.path[0]).base_id
        except KeyError:
            continue
    every = clients()
    return every[0].base_id if len(every) == 1 else None


def _tag_worker(context: dg.InitResourceContext) -> None:
    """Record this process as the run's worker (host, pid, start time) unless the run already
    names it: runs the daemon launched learn here which process runs them, so one whose process
    dies can be marked failed (defs/sensors.py `fail_dead_runs`)."""
    instance, run = context.instance, context.dagster_run
    if instance is None or run is None:
        return
    tags = current_worker().tags()
    if any(run.tags.get(key) != value for key, value in tags.items()):
        instance.add_run_tags(run.run_id, tags)


class PostgresResource(dg.ConfigurableResource):
    """The portal's PostgreSQL (bound to the DATABASE_URL env var; the `reconcile` CLI exports
    the embedded server's URL when you set none)."""

    database_url: str
    pool_size: int = 5
    base_id: str | None = Field(
        default=None,
        description="The Airtable base whose run-wide lock a run holds; default AIRTABLE_BASE_ID "
        "(the demo base when unset), the base the Airtable resource is bound to.",
    )

    _engine: Engine | None = PrivateAttr(default=None)
    _base_lock: BaseRunLock | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        try:
            url = urls.app_url(self.database_url)
        except Exception as exc:  # the URL itself is malformed: say what to set, hide secrets
            raise dg.Failure(f"DATABASE_URL is not a valid PostgreSQL URL: {exc}") from None
        self._engine = create_engine(url, pool_size=self.pool_size, pool_pre_ping=True)
        try:
            with self._engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except OperationalError as exc:
            first_line = str(exc.orig).splitlines()[0] if exc.orig else str(exc)
            raise dg.Failure(
                f"Cannot connect to PostgreSQL at {urls.redact(url)}: {first_line}. "
                "Set DATABASE_URL to a reachable database, or unset it to use the embedded one."
            ) from None
        # Alembic only here: loading the code location does not pay its import.
        from reconcile_pipeline.db.migrate import current_revision, head_revision

        revision = current_revision(self._engine)
        if revision != head_revision():
            raise dg.Failure(
                f"The database schema is at revision {revision or 'none'}, this code needs "
                f"{head_revision()}: run `reconcile db upgrade` (with the same DATABASE_URL)."
            )
        if context.run_id is not None:  # a run, not a sensor or a script building resources
            # What the process holds before its first step lives as long as it does: the
            # garbage collector stops walking it (worker_gc.py).
            freeze_loaded_objects()
            _tag_worker(context)
            self._hold_base(context, url)

    def _hold_base(self, context: dg.InitResourceContext, url: str) -> None:
        """Wait for, then hold until teardown, the base's run-wide lock (`db/base_lock.py`).

        Every reconcile asset and op needs this resource, so every run of the base takes the
        lock before its first step, however it was launched: two in-process runs
        (`reconcile backfill`, the demo), which skip Dagster's queue, no longer overlap, and a
        queued run, which the queue already keeps apart, finds it free. A killed process loses
        its PostgreSQL session and the lock with it. (With the in-process executor, which the
        project uses, a run initialises its resources once; a multiprocess executor would take
        the lock per step process.)
        """
        base_id = self.base_id or _run_base(context.dagster_run)
        log = context.log
        if base_id is None:
            if log is not None:
                log.warning("No Airtable base found for this run: it holds no base lock")
            return

        def waiting(message: str) -> None:
            if log is not None:
                log.info(message)

        lock = BaseRunLock(url, base_id, owner=str(context.run_id), on_wait=waiting)
        lock.acquire()
        self._base_lock = lock

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._base_lock is not None:
            from reconcile_pipeline.airtable.pacing import wait_until_quiet

            base_id = self._base_lock.base_id
            # A run waiting for the base starts its requests at once: hand over only a
            # pacing window after this run's last one.
            self._base_lock.release(before_handover=lambda: wait_until_quiet(base_id))
            self._base_lock = None
        if self._engine is not None:
            self._engine.dispose()

    @property
    def engine(self) -> Engine:
        assert self._engine is not None, "PostgresResource used outside of a run"
        return self._engine

    def repository(self, mapping: TableMapping) -> Repository:
        return Repository(self.engine, mapping)

