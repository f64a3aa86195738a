"""Redacting secrets (the Airtable token) from error texts, in every spelling they take.

requests refuses a header value ending in a newline with an error quoting the whole header,
`repr`-escaped ("Bearer pat…\\n"), which a plain search for the token does not find; a URL or a
JSON body quotes it encoded. Redaction therefore covers each of those forms. (The token itself is
cleaned and checked before use: `client.clean_token`.)
"""

import json
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

REDACTED = "***"


def secret_forms(secrets: Iterable[str]) -> list[str]:
    """Every spelling of each secret an error text may carry, longest first: as given,
    stripped, `repr`- and JSON-escaped, and URL-encoded (path and form style)."""
    forms: set[str] = set()
    for secret in secrets:
        if not secret:
            continue
        for variant in {secret, secret.strip()}:
            forms.update(
                {
                    variant,
                    repr(variant)[1:-1],
                    json.dumps(variant)[1:-1],
                    quote(variant, safe=""),
                    quote(variant),
                    quote_plus(variant),
                }
            )
    return sorted((f for f in forms if f), key=len, reverse=True)


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every form of every secret replaced by `***`."""
    for form in secret_forms(secrets):
        text = text.replace(form, REDACTED)
    return text
