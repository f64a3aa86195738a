"""Bearer tokens the emulator accepts, and their owners.

Airtable counts its 50 requests/s limit per token owner (the user or service account), across
all the owner's bases and tokens. In the emulator a token is its own owner unless it is added
with an explicit ``owner`` name, which several tokens may share (then they share the limit).

Raw tokens never leave this module: the request log, the admin API and printed messages use a
token's `fingerprint` (``tok_`` and 16 hex digits of a SHA-256), and a token-less owner key is
that fingerprint too. Tokens are kept in memory only, to redact any spelling of them from what
is logged (`redact`).
"""

import hashlib
import threading
from collections.abc import Mapping
from typing import Any

from reconcile_pipeline.airtable.secrets import REDACTED, secret_forms


def fingerprint(token: str) -> str:
    """A stable label for a token that does not reveal it: ``tok_`` + 16 hex digits."""
    digest = hashlib.sha256(b"airtable-emulator\0" + token.encode("utf-8", "surrogatepass"))
    return "tok_" + digest.hexdigest()[:16]


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The token of an ``Authorization: Bearer …`` header, or None."""
    value = headers.get("Authorization")
    if value is None or not value.startswith("Bearer "):
        return None
    return value[len("Bearer ") :]


class TokenRegistry:
    """Accepted tokens -> owner keys. Thread-safe."""

    def __init__(self, primary: str) -> None:
        self.primary = primary
        self._lock = threading.Lock()
        self._owners: dict[str, str] = {}
        self._forms: list[str] = []  # every spelling of every accepted token, longest first
        self.add(primary)

    def add(self, token: str, owner: str | None = None) -> dict[str, Any]:
        """Accept ``token`` (again: change its owner); ``{"token": fingerprint, "owner"}``.

        Raises:
            ValueError: an empty token, one with whitespace around it, or an empty owner.
        """
        if not isinstance(token, str) or not token or token != token.strip():
            raise ValueError("A token must be a non-empty string without surrounding whitespace")
        if owner is not None and (not isinstance(owner, str) or not owner.strip()):
            raise ValueError("An owner must be a non-empty string")
        label = fingerprint(token)
        with self._lock:
            self._owners[token] = owner if owner is not None else label
            self._forms = secret_forms(self._owners)
            return {"token": label, "owner": self._owners[token]}

    def owner(self, token: str | None) -> str | None:
        """The owner key of an accepted token; None for a missing or unknown one."""
        if token is None:
            return None
        with self._lock:
            return self._owners.get(token)

    def owners(self) -> dict[str, str]:
        """Fingerprint -> owner key of every accepted token."""
        with self._lock:
            return {fingerprint(t): o for t, o in self._owners.items()}

    def redact(self, text: str, presented: str | None = None) -> str:
        """``text`` without any spelling of an accepted token or of the ``presented`` one."""
        with self._lock:
            forms = self._forms
            # A short unknown token is no secret worth mangling the text for.
            if presented and len(presented.strip()) >= 8 and presented not in self._owners:
                forms = sorted({*forms, *secret_forms([presented])}, key=len, reverse=True)
        for form in forms:
            text = text.replace(form, REDACTED)
        return text
