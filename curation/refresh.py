"""Scheduled refreshes: each run writes a new dated output and dedups against the latest earlier one.

Layout under a refresh root (a directory or object-store prefix):

    <root>/2026-10-01/   kept/ rejected/ _state/ _manifest.json _SUCCESS
    <root>/2026-11-01/   the next refresh: its new rows minus anything kept in 2026-10-01 (and before:
                         each run's _state/ names the earlier outputs it builds on, dedup/state.py)

Earlier outputs are only read. An output without `_SUCCESS` (a run that died) is not a previous
refresh; running the same date again resumes it.
"""

from __future__ import annotations

import datetime as dt
import re

import fsspec

from curation.config import Config
from curation.errors import UserError

DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_date(text: str | None) -> str:
    """`text` as YYYY-MM-DD (default: today, UTC)."""
    if text is None:
        return dt.datetime.now(dt.timezone.utc).date().isoformat()
    try:
        return dt.date.fromisoformat(text).isoformat() if DATE.match(text) else _bad_date(text)
    except ValueError:
        return _bad_date(text)


def _bad_date(text: str) -> str:
    raise UserError(f"--date {text!r} is not a date: write it as YYYY-MM-DD, e.g. --date 2026-11-01")


def previous_output(root: str, date: str) -> str | None:
    """The latest complete dated output under `root` that is older than `date`, as a URL."""
    fs, path = fsspec.core.url_to_fs(root)
    if not fs.exists(path):
        return None
    dated = sorted(
        entry.rstrip("/").rsplit("/", 1)[-1]
        for entry in fs.ls(path, detail=False)
        if DATE.match(entry.rstrip("/").rsplit("/", 1)[-1])
    )
    for name in reversed([d for d in dated if d < date]):
        if fs.exists(f"{path.rstrip('/')}/{name}/_SUCCESS"):
            return f"{root.rstrip('/')}/{name}"
    return None


def refresh_config(cfg: Config, previous: str | None) -> Config:
    """`cfg` deduplicating against `previous` as well as anything it already names."""
    if previous is None:
        return cfg
    against = [*cfg.dedup.against, previous] if previous not in cfg.dedup.against else list(cfg.dedup.against)
    return cfg.model_copy(update={"dedup": cfg.dedup.model_copy(update={"against": against})})
