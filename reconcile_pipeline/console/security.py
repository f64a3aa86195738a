"""Sign-in, sessions and CSRF for the review console.

Writes need the operator token (`RECONCILE_CONSOLE_TOKEN`); without one the console is
read-only and keeps no session at all. With one, every visitor gets a signed session cookie
(anonymous until signed in); signing in with the token replaces it with a new, signed-in
session (a fresh id: a session planted before sign-in is worth nothing after it). Every POST
form carries a CSRF token derived from the session id, so a page of another site cannot post
for the operator (the cookie is also `SameSite=Strict` and `HttpOnly`).

The cookie is signed with HMAC-SHA256 under a key derived from the token (itsdangerous is not
installed with Dagster, and this needs nothing more): changing the token signs everybody out.
The token itself is never stored, rendered or logged; it is compared with
`hmac.compare_digest`.
"""

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

COOKIE = "reconcile_console"
SESSION_SECONDS = 12 * 3600  # a signed-in session lasts a working day
_KEY_LABEL = b"reconcile-console-session-v1"


@dataclass
class Session:
    """One visitor's session: an id (the CSRF token is derived from it) and whether it signed
    in. `changed`: the cookie must be (re)sent."""

    sid: str
    signed_in: bool
    issued: int
    changed: bool = False


class Guard:
    """Signs and checks sessions and CSRF tokens for one console token."""

    def __init__(self, token: str, max_age: int = SESSION_SECONDS) -> None:
        if not token:
            raise ValueError("an empty console token would let anybody write")
        self._token = token.encode("utf-8")
        self._key = hmac.new(self._token, _KEY_LABEL, hashlib.sha256).digest()
        self.max_age = max_age

    def __repr__(self) -> str:  # never the token, whatever prints this
        return "Guard(token=***)"

    # -- the token ----------------------------------------------------------------------------

    def token_matches(self, offered: str | None) -> bool:
        offered_bytes = (offered or "").strip().encode("utf-8")
        return hmac.compare_digest(
            hashlib.sha256(offered_bytes).digest(), hashlib.sha256(self._token).digest()
        )

    # -- sessions -----------------------------------------------------------------------------

    def new_session(self, signed_in: bool = False) -> Session:
        return Session(secrets.token_urlsafe(24), signed_in, int(time.time()), changed=True)

    def _sign(self, payload: bytes) -> str:
        return hmac.new(self._key, payload, hashlib.sha256).hexdigest()

    def dump(self, session: Session) -> str:
        payload = json.dumps(
            {"sid": session.sid, "in": session.signed_in, "iat": session.issued},
            separators=(",", ":"),
        ).encode("utf-8")
        encoded = base64.urlsafe_b64encode(payload).decode("ascii").rstrip("=")
        return f"{encoded}.{self._sign(encoded.encode('ascii'))}"

    def load(self, cookie: str | None) -> Session | None:
        """The session a cookie holds, or None when it is absent, forged or expired."""
        if not cookie or "." not in cookie or len(cookie) > 512:
            return None
        encoded, _, signature = cookie.rpartition(".")
        if not hmac.compare_digest(self._sign(encoded.encode("ascii", "replace")), signature):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
            session = Session(str(data["sid"]), bool(data["in"]), int(data["iat"]))
        except (ValueError, KeyError, TypeError):
            return None
        if session.issued + self.max_age < time.time():
            return None
        return session

    # -- CSRF ---------------------------------------------------------------------------------

    def csrf_token(self, session: Session) -> str:
        return hmac.new(self._key, b"csrf:" + session.sid.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, session: Session | None, offered: str | None) -> bool:
        if session is None or not offered:
            return False
        return hmac.compare_digest(self.csrf_token(session), offered)
