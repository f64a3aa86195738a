"""The review console (DESIGN §9): server-rendered pages (Starlette + Jinja2, plain HTML forms, no
JavaScript) where the people who own the data resolve conflicts, retry or release quarantined
fields and read a record's history.

Reads go through console/queries.py and operations/review.py; writes through the engine's own
paths: a resolution is `engine.conflicts.resolve` on a Repository of the conflict's (client,
table) mapping from the project file (an untagged portal write the capture trigger counts, so the
next run pushes it; audited in the change history), quarantine is `review.retry_quarantine` /
`review.release_quarantine`.

Security: read-only without a token; with one, writes need a signed-in session (console/
security.py) and every POST a CSRF token tied to it (403 otherwise). Jinja2 escapes every value.
Every response forbids framing, scripts and sniffing (a Content-Security-Policy with no script
source at all), and is never cached.
"""

import asyncio
import datetime as dt
import logging
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jinja2
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reconcile_pipeline.config.load import Project
from reconcile_pipeline.console import queries, values
from reconcile_pipeline.console.security import COOKIE, Guard, Session
from reconcile_pipeline.engine import conflicts as engine_conflicts
from reconcile_pipeline.engine.mapping import FieldSpec, TableMapping
from reconcile_pipeline.engine.repository import Repository
from reconcile_pipeline.operations import review

logger = logging.getLogger(__name__)

PAGE_SIZE = 50
HISTORY_PAGE_SIZE = 100
MAX_BODY = 1_000_000  # a form: a custom value of a long note at most
SIGN_IN_DELAY_S = 1.0  # after a wrong token: guessing stays slow
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        b"frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]
# The messages a redirect after a write may show (`done=<code>&n=<number>`): fixed texts, so a
# link cannot make the page say anything else.
DONE = {
    "resolved": "Conflict #{n} resolved. A value the portal now holds differently is pushed to "
    "Airtable by the client's next run.",
    "accepted": "{n} conflict(s) accepted as decided.",
    "retried": "{n} hold(s) will be looked at again by the next run of their table.",
    "released": "{n} hold(s) released.",
    "signed_in": "Signed in: you can resolve conflicts and release or retry held fields.",
    "signed_out": "Signed out.",
}
DIRECTIONS = {
    "airtable_to_postgres": "Airtable → portal",
    "postgres_to_airtable": "portal → Airtable",
}


class HTTPProblem(Exception):
    """A request the console refuses, with what to tell the person."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _SecurityHeaders:
    """Adds SECURITY_HEADERS to every HTTP response (error pages included)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in message.get("headers", [])}
                headers = list(message.get("headers", []))
                headers += [(n, v) for n, v in SECURITY_HEADERS if n not in names]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


@dataclass(frozen=True)
class PageLinks:
    """Pagination of one listing."""

    number: int
    size: int
    total: int | None  # None: unknown (history pages know only whether a next page exists)
    has_next: bool

    @property
    def pages(self) -> int | None:
        if self.total is None:
            return None
        return max(1, -(-self.total // self.size))

    @property
    def offset(self) -> int:
        return (self.number - 1) * self.size


def _page_number(request: Request) -> int:
    raw = request.query_params.get("page", "1")
    try:
        return max(1, min(int(raw), 1_000_000))
    except ValueError:
        return 1


def _safe_next(target: str | None, fallback: str = "/") -> str:
    """A path on this console to go back to after a POST (never another site)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return fallback
    if any(ord(ch) < 32 for ch in target):
        return fallback
    return target


def _with_query(path: str, **params: Any) -> str:
    """`path` with these query parameters set (None or "" drops one)."""
    parts = urllib.parse.urlsplit(path)
    query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=False))
    for key, value in params.items():
        if value is None or value == "":
            query.pop(key, None)
        else:
            query[key] = str(value)
    return urllib.parse.urlunsplit(("", "", parts.path, urllib.parse.urlencode(query), ""))


def _link(path: str, **params: Any) -> str:
    """A link with only the parameters that carry a value."""
    kept = {k: v for k, v in params.items() if v is not None and v != ""}
    return path + ("?" + urllib.parse.urlencode(kept) if kept else "")


def history_link(record_id: str, client: str | None = None, table: str | None = None) -> str:
    """The history page of a record (scoped to its client and table when known)."""
    return _link(f"/history/{urllib.parse.quote(record_id, safe='')}", client=client, table=table)


def _day(raw: str | None, name: str, errors: list[str]) -> dt.date | None:
    if not raw:
        return None
    try:
        return dt.date.fromisoformat(raw.strip())
    except ValueError:
        errors.append(f"{name} must be a date (YYYY-MM-DD); ignored")
        return None


def _ui_url(url: str | None) -> str | None:
    if not url:
        return None
    url = url.strip().rstrip("/")
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https"):
        logger.warning("RECONCILE_DAGSTER_UI_URL is not an http(s) URL: no links to runs")
        return None
    return url


class Console:
    """The console's state and handlers (one per app)."""

    def __init__(
        self,
        engine: Engine,
        project: Project | Sequence[TableMapping],
        token: str | None,
        dagster_ui_url: str | None,
    ) -> None:
        self.engine = engine
        if isinstance(project, Project):
            self.mapping_list = list(project.all_mappings())
            self.client_labels = {
                key: (client.name or key) for key, client in project.config.clients.items()
            }
        else:
            self.mapping_list = list(project)
            self.client_labels = {m.client: m.client for m in self.mapping_list}
        self.mappings = {(m.client, m.name): m for m in self.mapping_list}
        token = (token or "").strip()
        self.guard = Guard(token) if token else None
        self.ui_url = _ui_url(dagster_ui_url)
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("reconcile_pipeline.console", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.globals.update(
            link=_link,
            page_link=lambda path, params, number: _link(path, **params, page=number),
            history_link=history_link,
            shown=values.shown,
            when=values.when,
            short=values.SHORT,
            directions=DIRECTIONS,
            run_link=self.run_link,
            client_label=self.client_label,
            table_label=self.table_label,
            field_label=self.field_label,
        )

    # -- helpers for templates ------------------------------------------------------------------

    def run_link(self, run_id: str | None) -> str | None:
        if not run_id or self.ui_url is None:
            return None
        return f"{self.ui_url}/runs/{urllib.parse.quote(run_id, safe='')}"

    def client_label(self, client: str | None) -> str:
        if client is None:
            return ""
        return self.client_labels.get(client, client)

    def table_label(self, client: str | None, table_key: str) -> str:
        mapping = self.mappings.get((client or "", table_key))
        return (mapping.airtable_table_name or table_key) if mapping else table_key

    def field_spec(self, client: str | None, table_key: str, column: str) -> FieldSpec | None:
        mapping = self.mappings.get((client or "", table_key))
        return mapping.by_column().get(column) if mapping else None

    def field_label(self, client: str | None, table_key: str, column: str) -> str:
        if column == "*":
            return "whole record"
        spec = self.field_spec(client, table_key, column)
        label = spec.label if spec is not None else None
        return f"{label} ({column})" if label and label != column else column

    # -- sessions -------------------------------------------------------------------------------

    def session(self, request: Request) -> Session | None:
        """The visitor's session (a new anonymous one when it has none); None when read-only."""
        if self.guard is None:
            return None
        return self.guard.load(request.cookies.get(COOKIE)) or self.guard.new_session()

    def render(
        self,
        request: Request,
        session: Session | None,
        template: str,
        context: dict[str, Any],
        status: int = 200,
    ) -> HTMLResponse:
        done = DONE.get(request.query_params.get("done", ""))
        number = request.query_params.get("n", "")
        body = self.templates.get_template(template).render(
            request_path=_with_query(str(request.url.path) + "?" + request.url.query),
            path=request.url.path,
            writable=self.guard is not None,
            signed_in=bool(session and session.signed_in),
            csrf=self.guard.csrf_token(session) if self.guard and session else "",
            done=done.format(n=number if number.isdigit() else "") if done else None,
            ui_url=self.ui_url,
            **context,
        )
        response = HTMLResponse(body, status_code=status)
        self.keep_session(request, session, response)
        return response

    def keep_session(self, request: Request, session: Session | None, response: Response) -> None:
        if self.guard is None or session is None or not session.changed:
            return
        response.set_cookie(
            COOKIE,
            self.guard.dump(session),
            max_age=self.guard.max_age,
            path="/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )

    async def form(self, request: Request) -> dict[str, list[str]]:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            raise HTTPProblem(400, "Expected a form (application/x-www-form-urlencoded).")
        body = await request.body()
        if len(body) > MAX_BODY:
            raise HTTPProblem(413, "The form is too large.")
        try:
            decoded = body.decode("utf-8")
        except UnicodeDecodeError:
            raise HTTPProblem(400, "The form is not UTF-8.") from None
        return urllib.parse.parse_qs(
            decoded, keep_blank_values=True, strict_parsing=False, max_num_fields=2_000
        )

    async def writing(self, request: Request, *, sign_in: bool = False) -> tuple[Session, dict]:
        """The session and form of a POST that may write: 403 when the console is read-only, the
        CSRF token is missing or wrong, or (except for signing in) nobody signed in."""
        if self.guard is None:
            raise HTTPProblem(
                403, "This console is read-only: start it with RECONCILE_CONSOLE_TOKEN set."
            )
        form = await self.form(request)
        session = self.guard.load(request.cookies.get(COOKIE))
        if not self.guard.csrf_ok(session, _one(form, "csrf")):
            raise HTTPProblem(
                403,
                "The form's security token is missing or out of date: reload the page and "
                "try again.",
            )
        assert session is not None
        if not sign_in and not session.signed_in:
            raise HTTPProblem(403, "Sign in with the console token to make changes.")
        return session, form

    def after_write(self, form: dict, fallback: str, done: str, n: int) -> RedirectResponse:
        target = _safe_next(_one(form, "next"), fallback)
        return RedirectResponse(_with_query(target, done=done, n=n), status_code=303)

    # -- pages ----------------------------------------------------------------------------------

    def overview(self, request: Request) -> Response:
        session = self.session(request)
        tables = queries.overview(self.engine, self.mapping_list)
        return self.render(request, session, "overview.html", {"tables": tables})

    def conflicts_page(self, request: Request) -> Response:
        session = self.session(request)
        params = request.query_params
        errors: list[str] = []
        status = params.get("status", "open")
        if status not in queries.STATUSES:
            errors.append("unknown status; showing open conflicts")
            status = "open"
        flt = queries.ConflictFilter(
            client=params.get("client") or None,
            table=params.get("table") or None,
            field=params.get("field") or None,
            record=params.get("record") or None,
            status=status,
            since=_day(params.get("since"), "From", errors),
            until=_day(params.get("until"), "To", errors),
        )
        number = _page_number(request)
        total = queries.count_conflicts(self.engine, flt)
        page = PageLinks(number, PAGE_SIZE, total, number * PAGE_SIZE < total)
        rows = queries.list_conflicts(self.engine, flt, PAGE_SIZE, page.offset)
        fields = sorted(
            {
                (f.column, f.label or f.column)
                for m in self.mapping_list
                if flt.client in (None, m.client) and flt.table in (None, m.name)
                for f in m.fields
            }
        )
        whole_table = (
            self.mappings.get((flt.client, flt.table))
            if flt.client
            and flt.table
            and not (flt.field or flt.record or flt.since or flt.until)
            and status == "open"
            else None
        )
        return self.render(
            request,
            session,
            "conflicts.html",
            {
                "filter": flt,
                "since": params.get("since", ""),
                "until": params.get("until", ""),
                "conflicts": [self._conflict_view(c) for c in rows],
                "page": page,
                "errors": errors,
                "clients": sorted(self.client_labels.items()),
                "tables": sorted({m.name for m in self.mapping_list}),
                "fields": fields,
                "whole_table": whole_table,
            },
        )

    def _conflict_view(self, conflict: queries.Conflict) -> dict[str, Any]:
        spec = self.field_spec(conflict.client, conflict.table_key, conflict.field)
        return {
            "c": conflict,
            "resolvable": conflict.status == "open"
            and (conflict.client, conflict.table_key) in self.mappings
            and spec is not None,
            "custom": values.editable(spec, conflict.decided_value),
            "kind": spec.kind.value if spec is not None else None,
        }

    def conflict_page(self, request: Request) -> Response:
        session = self.session(request)
        conflict_id = _path_id(request, "conflict_id")
        conflict = queries.get_conflict(self.engine, conflict_id)
        if conflict is None:
            raise HTTPProblem(404, f"There is no conflict #{conflict_id}.")
        return self.render(
            request,
            session,
            "conflict.html",
            {"view": self._conflict_view(conflict), "error": None},
        )

    def quarantine_page(self, request: Request) -> Response:
        session = self.session(request)
        params = request.query_params
        client = params.get("client") or None
        table = params.get("table") or None
        released = params.get("released") == "1"
        number = _page_number(request)
        total = review.count_quarantine(self.engine, client, table, include_released=released)
        page = PageLinks(number, PAGE_SIZE, total, number * PAGE_SIZE < total)
        holds = review.list_quarantine(
            self.engine,
            client,
            table,
            include_released=released,
            limit=PAGE_SIZE,
            offset=page.offset,
        )
        return self.render(
            request,
            session,
            "quarantine.html",
            {
                "holds": holds,
                "page": page,
                "client": client,
                "table": table,
                "released": released,
                "clients": sorted(self.client_labels.items()),
                "tables": sorted({m.name for m in self.mapping_list}),
            },
        )

    def history_search(self, request: Request) -> Response:
        session = self.session(request)
        query = (request.query_params.get("q") or "").strip()
        client = request.query_params.get("client") or None
        matches: list[review.RecordMatch] = []
        error = None
        if query:
            try:
                matches = review.find_records(self.engine, self.mapping_list, query, client)
            except review.NotSearchable:
                error = "Search by a record id (rec…), an e-mail address or a phone number."
            if len(matches) == 1:
                match = matches[0]
                return RedirectResponse(
                    history_link(match.record_id, match.client, match.table_key),
                    status_code=303,
                )
        return self.render(
            request,
            session,
            "search.html",
            {
                "q": query,
                "client": client,
                "matches": matches,
                "error": error,
                "clients": sorted(self.client_labels.items()),
            },
        )

    def history_page(self, request: Request) -> Response:
        session = self.session(request)
        record_id = request.path_params["record_id"]
        client = request.query_params.get("client") or None
        table = request.query_params.get("table") or None
        if client is None and table is None:
            found = queries.locate_record(self.engine, record_id, list(self.mappings))
            if len(found) == 1:
                client, table = found[0]
        number = _page_number(request)
        changes = review.record_history(
            self.engine,
            record_id,
            client,
            table,
            limit=HISTORY_PAGE_SIZE + 1,
            offset=(number - 1) * HISTORY_PAGE_SIZE,
        )
        page = PageLinks(number, HISTORY_PAGE_SIZE, None, len(changes) > HISTORY_PAGE_SIZE)
        changes = changes[:HISTORY_PAGE_SIZE]
        mapping = self.mappings.get((client or "", table or ""))
        current = queries.portal_row(self.engine, mapping, record_id) if mapping else None
        open_conflicts = queries.list_conflicts(
            self.engine,
            queries.ConflictFilter(client=client, table=table, record=record_id),
            limit=20,
        )
        holds = queries.record_holds(self.engine, record_id, client, table)
        return self.render(
            request,
            session,
            "history.html",
            {
                "record_id": record_id,
                "client": client,
                "table": table,
                "mapping": mapping,
                "current": current,
                "changes": changes,
                "page": page,
                "open_conflicts": [self._conflict_view(c) for c in open_conflicts],
                "holds": holds,
                "history_path": f"/history/{urllib.parse.quote(record_id, safe='')}",
            },
        )

    def sign_in_page(self, request: Request) -> Response:
        if self.guard is None:
            raise HTTPProblem(
                404, "This console is read-only: start it with RECONCILE_CONSOLE_TOKEN set."
            )
        session = self.session(request)
        return self.render(
            request,
            session,
            "signin.html",
            {"next": _safe_next(request.query_params.get("next")), "error": None},
        )

    # -- writes ---------------------------------------------------------------------------------

    async def sign_in(self, request: Request) -> Response:
        session, form = await self.writing(request, sign_in=True)
        assert self.guard is not None
        if not self.guard.token_matches(_one(form, "token")):
            await asyncio.sleep(SIGN_IN_DELAY_S)
            logger.warning("Console sign-in refused (wrong token) from %s", _peer(request))
            return self.render(
                request,
                session,
                "signin.html",
                {"next": _safe_next(_one(form, "next")), "error": "That is not the console token."},
                status=403,
            )
        fresh = self.guard.new_session(signed_in=True)
        logger.info("Console sign-in from %s", _peer(request))
        response = self.after_write(form, "/", "signed_in", 0)
        self.keep_session(request, fresh, response)
        return response

    async def sign_out(self, request: Request) -> Response:
        _, form = await self.writing(request, sign_in=True)
        assert self.guard is not None
        response = RedirectResponse(_with_query("/", done="signed_out"), status_code=303)
        self.keep_session(request, self.guard.new_session(), response)
        return response

    async def resolve(self, request: Request) -> Response:
        session, form = await self.writing(request)
        conflict_id = _path_id(request, "conflict_id")
        choice = _one(form, "choice")
        if choice not in ("airtable", "portal", "custom"):
            raise HTTPProblem(400, "Choose Airtable's value, the portal's or a value of your own.")
        try:
            await run_in_threadpool(self._resolve, conflict_id, choice, _one(form, "value") or "")
        except _Refused as refused:
            conflict = await run_in_threadpool(queries.get_conflict, self.engine, conflict_id)
            if conflict is None:
                raise HTTPProblem(404, f"There is no conflict #{conflict_id}.") from None
            return self.render(
                request,
                session,
                "conflict.html",
                {"view": self._conflict_view(conflict), "error": str(refused)},
                status=refused.status,
            )
        logger.info("Conflict #%d resolved from the console (%s)", conflict_id, choice)
        return self.after_write(form, f"/conflicts/{conflict_id}", "resolved", conflict_id)

    def _resolve(self, conflict_id: int, choice: str, typed: str) -> Any:
        conflict = queries.get_conflict(self.engine, conflict_id)
        if conflict is None:
            raise _Refused(404, f"There is no conflict #{conflict_id}.")
        if conflict.status != "open":
            raise _Refused(409, f"Conflict #{conflict_id} is already resolved.")
        mapping = self.mappings.get((conflict.client, conflict.table_key))
        spec = mapping.by_column().get(conflict.field) if mapping else None
        if mapping is None or spec is None:
            raise _Refused(
                409,
                f"Conflict #{conflict_id} is on {conflict.client}/{conflict.table_key}."
                f"{conflict.field}, which the project file does not map: resolve it once the "
                "file declares it again.",
            )
        if choice == "custom":
            try:
                value = values.parse(spec, typed)
            except ValueError as exc:
                raise _Refused(400, f"That value cannot be used: {exc}") from None
        else:
            value = conflict.airtable_value if choice == "airtable" else conflict.portal_value
            if value != conflict.decided_value:
                try:
                    values.canonical(spec, value)
                except ValueError as exc:
                    side = "Airtable's" if choice == "airtable" else "The portal's"
                    raise _Refused(
                        400, f"{side} value cannot be written to the portal: {exc}"
                    ) from None
        repo = Repository(self.engine, mapping)
        try:
            return engine_conflicts.resolve(
                repo, conflict_id, choice, value if choice == "custom" else None
            )
        except LookupError:
            raise _Refused(409, f"Conflict #{conflict_id} is already resolved.") from None
        except DBAPIError as exc:
            first = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
            raise _Refused(400, f"PostgreSQL refused the value: {first}") from None

    async def accept(self, request: Request) -> Response:
        _, form = await self.writing(request)
        ids = _ids(form)
        whole = _one(form, "whole_table")
        if whole:
            client, _, table = whole.partition("/")
            mapping = self.mappings.get((client, table))
            if mapping is None:
                raise HTTPProblem(400, "The project file has no such table.")
            accepted = await run_in_threadpool(
                engine_conflicts.accept_all_recommendations, Repository(self.engine, mapping)
            )
        else:
            if not ids:
                raise HTTPProblem(400, "Tick the conflicts whose recommendation you accept.")
            accepted = await run_in_threadpool(self._accept, ids)
        logger.info("%d conflicts accepted from the console", accepted)
        return self.after_write(form, "/conflicts", "accepted", accepted)

    def _accept(self, ids: list[int]) -> int:
        groups: dict[tuple[str, str], list[int]] = {}
        for conflict in queries.get_conflicts(self.engine, ids):
            groups.setdefault((conflict.client, conflict.table_key), []).append(conflict.id)
        accepted = 0
        for key, group in sorted(groups.items()):
            mapping = self.mappings.get(key)
            if mapping is None:
                continue  # a table the file no longer maps: left open, as resolve does
            accepted += len(queries.accept_recommendations(Repository(self.engine, mapping), group))
        return accepted

    async def quarantine_action(self, request: Request) -> Response:
        _, form = await self.writing(request)
        action = request.path_params["action"]
        if action not in ("retry", "release"):
            raise HTTPProblem(404, "There is no such page.")
        ids = _ids(form)
        if not ids:
            raise HTTPProblem(400, "Tick the held fields to act on.")
        if action == "retry":
            outcome = await run_in_threadpool(review.retry_quarantine, self.engine, ids)
            done, n = "retried", len(outcome.retried)
        else:
            released = await run_in_threadpool(review.release_quarantine, self.engine, ids)
            done, n = "released", len(released)
        logger.info("%d quarantine holds %s from the console", n, done)
        return self.after_write(form, "/quarantine", done, n)

    # -- errors ---------------------------------------------------------------------------------

    def problem_page(self, request: Request, status: int, message: str) -> Response:
        try:
            session = self.session(request)
        except Exception:  # noqa: BLE001 — an error page must render whatever went wrong
            session = None
        return self.render(request, session, "error.html", {"message": message}, status=status)


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _one(form: dict[str, list[str]], name: str) -> str | None:
    found = form.get(name)
    return found[0] if found else None


def _ids(form: dict[str, list[str]]) -> list[int]:
    ids = []
    for raw in form.get("id", []):
        try:
            ids.append(int(raw))
        except ValueError:
            raise HTTPProblem(400, "Not a valid id.") from None
    return ids


def _path_id(request: Request, name: str) -> int:
    return int(request.path_params[name])


def _peer(request: Request) -> str:
    return request.client.host if request.client else "?"


def create_app(
    engine: Engine,
    project: Project | Sequence[TableMapping],
    token: str | None,
    dagster_ui_url: str | None,
    *,
    allowed_hosts: Sequence[str] | None = None,
) -> Starlette:
    """The console for `project`'s clients and tables on `engine` (the portal's database, the
    bookkeeping at the head revision). `token`: the operator token writes need (None or empty:
    read-only). `dagster_ui_url`: where run ids link to (`{url}/runs/{run_id}`). `allowed_hosts`:
    the Host headers accepted (serve() passes the loopback names when it binds to loopback, so a
    page of another site that rebinds its name to 127.0.0.1 cannot read the console)."""
    console = Console(engine, project, token, dagster_ui_url)

    async def problem(request: Request, exc: Exception) -> Response:
        if isinstance(exc, HTTPProblem):
            return console.problem_page(request, exc.status, exc.message)
        if isinstance(exc, OperationalError):
            logger.error("Console: the database is unreachable (%s)", type(exc.orig).__name__)
            return console.problem_page(
                request, 503, "The database cannot be reached: check DATABASE_URL and the server."
            )
        if isinstance(exc, SQLAlchemyError):
            logger.exception("Console: a database error")
            return console.problem_page(
                request, 500, "A database error stopped this page (the console's log has it)."
            )
        raise exc

    async def stylesheet(request: Request) -> Response:
        source = console.templates.loader.get_source(console.templates, "console.css")[0]
        return Response(source, media_type="text/css")

    async def not_found(request: Request, exc: Exception) -> Response:
        return console.problem_page(request, 404, "There is no such page.")

    routes = [
        Route("/", console.overview, methods=["GET"]),
        Route("/conflicts", console.conflicts_page, methods=["GET"]),
        Route("/conflicts/accept", console.accept, methods=["POST"]),
        Route("/conflicts/{conflict_id:int}", console.conflict_page, methods=["GET"]),
        Route("/conflicts/{conflict_id:int}/resolve", console.resolve, methods=["POST"]),
        Route("/quarantine", console.quarantine_page, methods=["GET"]),
        Route("/quarantine/{action:str}", console.quarantine_action, methods=["POST"]),
        Route("/history", console.history_search, methods=["GET"]),
        Route("/history/{record_id:str}", console.history_page, methods=["GET"]),
        Route("/signin", console.sign_in_page, methods=["GET"]),
        Route("/signin", console.sign_in, methods=["POST"]),
        Route("/signout", console.sign_out, methods=["POST"]),
        Route("/console.css", stylesheet, methods=["GET"]),
    ]
    middleware = [Middleware(_SecurityHeaders)]
    if allowed_hosts:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts)))
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={
            HTTPProblem: problem,
            SQLAlchemyError: problem,
            404: not_found,
            405: _method_not_allowed(console),
        },
        max_body_size=MAX_BODY,
    )
    app.state.console = console
    return app


def _method_not_allowed(console: Console) -> Callable:
    async def handler(request: Request, exc: Exception) -> Response:
        return console.problem_page(request, 405, "That page does not take this kind of request.")

    return handler
