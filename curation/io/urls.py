"""Credentials never leave the process: every URL that is stored (job.json, the manifest, the report) or
printed (logs, one-line errors) goes through `strip_credentials` first.

A URL may carry secrets in two places: its user info (`http://user:password@host/...`, `ray://user:pw@head`)
and its query (pre-signed object-store URLs: `X-Amz-Signature`, `X-Amz-Credential`, `X-Goog-Signature`,
`sig`, `token`, ...). The user info is dropped; a secret query value becomes `***`. The URL itself is still
used as given wherever a file is opened: only the copies that leave the process are stripped.
"""

from __future__ import annotations

import re
import socket
import threading

# scheme://netloc: netloc runs to the first path, query or fragment delimiter (or a character no URL in a
# sentence carries). User info may hold a raw '@' (a careless password): the host follows the last one.
_URL_AUTHORITY = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<netloc>[^/?#\s'\"<>`]*)")
# name=value in a query, for names that carry secrets (pre-signed URLs, API keys, tokens).
_SECRET_PARAM = re.compile(
    r"(?P<name>[?&;](?:[A-Za-z0-9_.\-]*(?:signature|credential|security-token|securitytoken|token|secret|password"
    r"|passwd|api[_-]?key|access[_-]?key|apikey|auth)[A-Za-z0-9_.\-]*|sig|key|pwd|pw)=)(?P<value>[^&#\s'\"<>`]+)",
    re.IGNORECASE,
)
REDACTED = "***"


def strip_credentials(text: str) -> str:
    """`text` (a URL, or a sentence holding URLs) without the user info and secret query values of its URLs."""
    if "://" not in text and "=" not in text:
        return text
    text = _URL_AUTHORITY.sub(lambda m: m.group("scheme") + m.group("netloc").rpartition("@")[2], text)
    if "=" in text:
        text = _SECRET_PARAM.sub(lambda m: m.group("name") + REDACTED, text)
    return text


def strip_credentials_in(value):
    """A JSON-like value (dicts, lists, strings) with `strip_credentials` applied to every string in it."""
    if isinstance(value, str):
        return strip_credentials(value)
    if isinstance(value, dict):
        return {strip_credentials_in(k): strip_credentials_in(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strip_credentials_in(v) for v in value]
    return value


def has_credentials(url: str) -> bool:
    return strip_credentials(url) != url


def answers(host: str, port: int, timeout: float) -> bool:
    """Whether a TCP connect to host:port succeeds within `timeout` (in a thread: resolving a name has no
    timeout of its own)."""
    answer: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                answer.append(True)
        except OSError:
            answer.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(answer and answer[0])
