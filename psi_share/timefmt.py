"""How times are shown to people: UTC, to the second, one format everywhere."""

from __future__ import annotations

import datetime as dt


def utc_text(ts: float) -> str:
    """``ts`` (seconds since the epoch) as ``YYYY-MM-DD HH:MM:SSZ``."""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
