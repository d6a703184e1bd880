"""Job schedules: a cron expression or an interval, in a time zone.

A job file may carry a ``[job.schedule]`` table::

    [job.schedule]
    cron = "0 3 * * 1"          # 5-field cron, evaluated in `timezone` (wall clock)
    timezone = "Europe/Berlin"  # IANA name; default "UTC"

or::

    [job.schedule]
    every = "6h"                # elapsed time: s, m, h, d, w, combined as "1h30m"
    start = "2026-01-05T03:00"  # optional anchor, local time in `timezone`

Cron slots are wall-clock times in the zone (cronsim, which follows Debian
cron across DST: a slot in the skipped spring-forward hour runs at the first
valid minute after it; a daily slot in the repeated autumn hour runs once).
``every`` counts elapsed time: across a DST change a 24 h interval moves by
an hour on the wall clock; use cron for "every day at 03:00 local".

Everything here is pure: times are POSIX timestamps passed in, never read
from a clock, so the scheduler can be tested without sleeping.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from ..errors import ConfigError

_KEYS = {"cron", "every", "timezone", "start"}
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_EVERY = re.compile(r"^(?:\d+[smhdw])+\Z")
#: Lateness beyond which a run counts as a catch-up rather than on time.
ON_TIME_SECONDS = 60.0
#: Missed slots are counted up to this many (for the message only).
MAX_COUNTED_MISSES = 10_000


@dataclass(frozen=True)
class Schedule:
    """When a job runs. Exactly one of ``cron`` and ``every_seconds`` is set."""

    timezone: str = "UTC"
    cron: str | None = None
    every_seconds: int | None = None
    start: float | None = None  # anchor of `every` slots (timestamp)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def describe(self) -> str:
        if self.cron is not None:
            return f"cron '{self.cron}' ({self.timezone})"
        text = f"every {_format_seconds(self.every_seconds or 0)}"
        if self.start is not None:
            local = dt.datetime.fromtimestamp(self.start, self.zone)
            text += f" from {local.isoformat(timespec='minutes')}"
        return f"{text} ({self.timezone})"

    def next_after(self, t: float) -> float:
        """The first slot strictly after timestamp ``t``."""
        if self.cron is not None:
            local = dt.datetime.fromtimestamp(t, self.zone)
            for slot in CronSim(self.cron, local.replace(microsecond=0)):
                if slot.timestamp() > t:
                    return slot.timestamp()
            raise AssertionError("cronsim iterates forever")  # pragma: no cover
        every = float(self.every_seconds or 0)
        if self.start is None:
            return t + every
        if t < self.start:
            return self.start
        return self.start + (math.floor((t - self.start) / every) + 1) * every


@dataclass(frozen=True)
class Due:
    """The next run of a job: when, and how many slots passed without a run."""

    at: float  # the first slot after the reference time
    missed: int  # slots in (reference, now]; 0 when not yet due

    @property
    def is_due(self) -> bool:
        return self.missed > 0

    def trigger(self, now: float) -> str:
        """'schedule' for a run on time, 'catch-up' for one after downtime."""
        return "schedule" if self.missed == 1 and now - self.at <= ON_TIME_SECONDS else "catch-up"


def plan(schedule: Schedule, reference: float, now: float) -> Due:
    """When the job is next due, given the time of its last run (``reference``).

    A job that missed several slots (the node was down) is due ONCE: the
    caller runs it now, and the next plan starts from that run's time, so
    the missed slots are not replayed one by one.
    """
    first = schedule.next_after(reference)
    if first > now:
        return Due(first, 0)
    missed, slot = 1, first
    while missed < MAX_COUNTED_MISSES:
        slot = schedule.next_after(slot)
        if slot > now:
            break
        missed += 1
    return Due(first, missed)


def parse_schedule(table: object, where: str) -> Schedule:
    """Validate a ``[job.schedule]`` table; errors name the file and key."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [job.schedule] must be a table")
    unknown = set(table) - _KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) in [job.schedule]: {', '.join(sorted(unknown))}")
    if ("cron" in table) == ("every" in table):
        raise ConfigError(f"{where}: [job.schedule] needs exactly one of cron or every")
    tz_name = table.get("timezone", "UTC")
    if not isinstance(tz_name, str) or not tz_name:
        raise ConfigError(f"{where}: [job.schedule] timezone must be an IANA zone name such as \"Europe/Berlin\"")
    try:
        zone = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{where}: [job.schedule] timezone {tz_name!r} is not a known IANA time zone") from None
    if "cron" in table:
        expr = table["cron"]
        if "start" in table:
            raise ConfigError(f"{where}: [job.schedule] start only applies to every, not to cron")
        if not isinstance(expr, str) or len(expr.split()) != 5:
            raise ConfigError(f"{where}: [job.schedule] cron must be a 5-field expression such as \"0 3 * * 1\"")
        try:
            CronSim(expr, dt.datetime(2000, 1, 1, tzinfo=zone))
        except (CronSimError, ValueError) as exc:
            raise ConfigError(f"{where}: [job.schedule] cron {expr!r} is invalid: {exc}") from None
        return Schedule(timezone=tz_name, cron=expr)
    every = table["every"]
    if not isinstance(every, str) or not _EVERY.match(every.strip().lower()):
        raise ConfigError(f"{where}: [job.schedule] every must look like \"30m\", \"6h\", \"1d\" or \"1h30m\"")
    seconds = sum(int(n) * _UNITS[u] for n, u in re.findall(r"(\d+)([smhdw])", every.strip().lower()))
    if seconds < 60:
        raise ConfigError(f"{where}: [job.schedule] every must be at least 1m")
    start = None
    if "start" in table:
        value = table["start"]
        try:
            local = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
        except ValueError:
            local = None
        if not isinstance(local, dt.datetime):
            raise ConfigError(f"{where}: [job.schedule] start must be a local date-time such as \"2026-01-05T03:00\"")
        if local.tzinfo is not None:
            raise ConfigError(f"{where}: [job.schedule] start is local time in timezone; leave out the offset")
        start = local.replace(tzinfo=zone).timestamp()
    return Schedule(timezone=tz_name, every_seconds=seconds, start=start)


def _format_seconds(seconds: int) -> str:
    parts = []
    for unit in ("w", "d", "h", "m", "s"):
        n, seconds = divmod(seconds, _UNITS[unit])
        if n:
            parts.append(f"{n}{unit}")
    return "".join(parts) or "0s"
