"""The README's first command: the whole product on the embedded default, end to end."""

from reconcile_pipeline.db.embedded import EmbeddedPostgres
from reconcile_pipeline.instance import prepare_environment


def run_demo() -> int:
    info = EmbeddedPostgres().start()
    urls = prepare_environment()
    print(f"Embedded PostgreSQL (pid {info.pid}) ready; schema migrated.")
    print(f"DATABASE_URL={urls.app}")
    return 0
