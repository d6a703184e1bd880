"""Schedule computation (pure): cron and intervals, time zones across DST, catch-up."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from psi_share.errors import ConfigError
from psi_share.jobs.spec import load_job
from psi_share.jobs.schedule import Schedule, parse_schedule, plan

UTC = dt.timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")


def ts(*args: int, tz: dt.tzinfo = UTC) -> float:
    return dt.datetime(*args, tzinfo=tz).timestamp()


def local(t: float, tz: dt.tzinfo = BERLIN) -> str:
    return dt.datetime.fromtimestamp(t, tz).isoformat()


def test_cron_next_slot_is_strictly_after() -> None:
    s = Schedule(cron="0 10 * * *")
    assert s.next_after(ts(2026, 1, 1, 9, 59, 59)) == ts(2026, 1, 1, 10, 0)
    assert s.next_after(ts(2026, 1, 1, 10, 0)) == ts(2026, 1, 2, 10, 0)
    assert s.next_after(ts(2026, 1, 1, 10, 0) + 0.25) == ts(2026, 1, 2, 10, 0)  # fractions of a second
    weekly = Schedule(cron="30 3 * * 1")  # Mondays 03:30
    assert weekly.next_after(ts(2026, 11, 27, 12, 0)) == ts(2026, 11, 30, 3, 30)  # Fri -> Mon


def test_cron_is_wall_clock_in_its_time_zone() -> None:
    s = Schedule(cron="0 3 * * *", timezone="Europe/Berlin")
    assert local(s.next_after(ts(2026, 1, 15, 0, 0))) == "2026-01-15T03:00:00+01:00"  # winter: UTC+1
    assert local(s.next_after(ts(2026, 7, 15, 0, 0))) == "2026-07-15T03:00:00+02:00"  # summer: UTC+2


def test_cron_across_spring_forward() -> None:
    # Berlin, 2026-03-29: 02:00 jumps to 03:00. A 02:30 slot does not exist
    # that day: it runs once, at the first valid time after the gap.
    s = Schedule(cron="30 2 * * *", timezone="Europe/Berlin")
    t = ts(2026, 3, 28, 12, 0, tz=BERLIN)
    slots = []
    for _ in range(3):
        t = s.next_after(t)
        slots.append(local(t))
    assert slots == ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00", "2026-03-31T02:30:00+02:00"]


def test_cron_across_fall_back() -> None:
    # Berlin, 2026-10-25: 03:00 goes back to 02:00. A daily 02:30 runs once
    # (not twice); an hourly job runs in both 02:00 hours, an hour apart.
    daily = Schedule(cron="30 2 * * *", timezone="Europe/Berlin")
    first = daily.next_after(ts(2026, 10, 24, 12, 0, tz=BERLIN))
    second = daily.next_after(first)
    assert local(first) == "2026-10-25T02:30:00+02:00"
    assert local(second) == "2026-10-26T02:30:00+01:00"
    assert second - first == 25 * 3600
    hourly = Schedule(cron="0 * * * *", timezone="Europe/Berlin")
    t, seen = ts(2026, 10, 25, 0, 30, tz=BERLIN), []
    for _ in range(4):
        t = hourly.next_after(t)
        seen.append(t)
    assert [b - a for a, b in zip(seen, seen[1:])] == [3600, 3600, 3600]  # no gap, no double
    assert [local(x) for x in seen] == [
        "2026-10-25T01:00:00+02:00", "2026-10-25T02:00:00+02:00", "2026-10-25T02:00:00+01:00", "2026-10-25T03:00:00+01:00",
    ]


def test_interval_counts_elapsed_time_and_anchor() -> None:
    assert Schedule(every_seconds=3600).next_after(1000.0) == 4600.0
    start = dt.datetime(2026, 3, 28, 12, 0, tzinfo=BERLIN).timestamp()
    s = Schedule(timezone="Europe/Berlin", every_seconds=86400, start=start)
    assert s.next_after(start - 5) == start
    assert s.next_after(start) == start + 86400
    # 24 h of elapsed time across spring-forward is 13:00 on the wall clock.
    assert local(s.next_after(start + 1)) == "2026-03-29T13:00:00+02:00"
    assert s.next_after(start + 86400 * 10 + 1) == start + 86400 * 11


def test_plan_runs_once_after_downtime() -> None:
    s = Schedule(cron="0 10 * * *")
    last = ts(2026, 1, 1, 10, 0)
    # Not due yet.
    due = plan(s, last, ts(2026, 1, 2, 9, 0))
    assert not due.is_due and due.at == ts(2026, 1, 2, 10, 0)
    # On time (a few seconds late).
    now = ts(2026, 1, 2, 10, 0, 4)
    due = plan(s, last, now)
    assert due.is_due and due.missed == 1 and due.trigger(now) == "schedule"
    # Down from Jan 1 to Jan 4 15:00: three slots missed, ONE run due now.
    now = ts(2026, 1, 4, 15, 0)
    due = plan(s, last, now)
    assert due.is_due and due.missed == 3 and due.at == ts(2026, 1, 2, 10, 0) and due.trigger(now) == "catch-up"
    # After that one run (its time becomes the reference) nothing is due until the next slot.
    after = plan(s, now + 2, now + 60)
    assert not after.is_due and after.at == ts(2026, 1, 5, 10, 0)
    # One missed slot, found late, is a catch-up too.
    assert plan(s, last, ts(2026, 1, 2, 11, 0)).trigger(ts(2026, 1, 2, 11, 0)) == "catch-up"


def test_plan_interval_catch_up() -> None:
    s = Schedule(every_seconds=6 * 3600)
    due = plan(s, 0.0, 20 * 3600.0)
    assert due.is_due and due.missed == 3 and due.at == 6 * 3600.0
    assert not plan(s, 20 * 3600.0, 20 * 3600.0 + 1).is_due


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"timezone": "UTC"}, "exactly one of cron or every"),
        ({"cron": "0 3 * * *", "every": "1h"}, "exactly one of cron or every"),
        ({"cron": "0 3 * *"}, "5-field expression"),
        ({"cron": "61 3 * * *"}, "cron '61 3 * * *' is invalid"),
        ({"cron": "0 3 * * *", "timezone": "Mars/Olympus"}, "not a known IANA time zone"),
        ({"cron": "0 3 * * *", "start": "2026-01-01T00:00"}, "start only applies to every"),
        ({"every": "5s"}, "at least 1m"),
        ({"every": "often"}, "every must look like"),
        ({"every": "1d", "start": "tomorrow"}, "local date-time"),
        ({"every": "1d", "start": "2026-01-01T00:00+01:00"}, "leave out the offset"),
        ({"cron": "0 3 * * *", "when": "soon"}, "unknown key(s) in [job.schedule]: when"),
    ],
)
def test_bad_schedules_name_the_key(table: dict, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_schedule(table, "jobs/weekly.toml")
    assert message in str(exc.value) and str(exc.value).startswith("jobs/weekly.toml: ")


def test_job_file_with_schedule(tmp_path: Path) -> None:
    path = tmp_path / "weekly.toml"
    path.write_text(
        '[job]\nname = "weekly"\nparticipants = ["lab-a", "lab-b"]\ndataset = "flagged"\nkinds = ["email"]\n\n'
        '[job.schedule]\nevery = "1d"\nstart = 2026-01-05T03:00:00\ntimezone = "America/New_York"\n'
    )
    job = load_job(path)
    assert job.schedule is not None
    assert job.schedule.every_seconds == 86400
    assert job.schedule.start == ts(2026, 1, 5, 8, 0)  # 03:00 EST
    assert job.schedule.describe() == "every 1d from 2026-01-05T03:00-05:00 (America/New_York)"
    assert "schedule" not in job.parameters()  # the schedule is not a matching parameter
    path.write_text(path.read_text().replace('every = "1d"', 'every = "1d"\ncron = "0 3 * * *"'))
    with pytest.raises(ConfigError, match="exactly one of cron or every"):
        load_job(path)
