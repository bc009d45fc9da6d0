"""The benchmark plant, seeded and pure: one site, lines of machines, their calendar and data.

One site in Europe/Berlin (two DST changes a year), areas of ``LINES_PER_AREA`` lines of
``PER_LINE`` machines. Shifts: early 06:00, late 14:00 and night 22:00, Monday to Friday,
early and late on Saturday; fixed-date public holidays as whole-day shift exceptions.
Every line has its own breaks (15 min two hours into each shift, 30 min at four and a
half hours, staggered by line) and a 4-hour planned maintenance every four weeks, as
planned downtime; its product changes every 4 to 12 hours, with a changeover of 15 to 40
minutes when that happens inside a shift. Each machine:

* is ``idle`` off shift and in breaks, ``planned_maintenance`` and ``changeover`` when its
  line is, and otherwise alternates ``running`` (17 to 50 min on average, per machine: a
  state change every 10 to 30 min) with a stop: a micro-stop (20 to 110 s; the threshold
  is 120 s), a fault, starved, blocked or idle (a minute to half an hour);
* reports a count row every minute it ran (at a random second of the minute): the parts
  its running seconds allow at its speed (85 to 97 % of the ideal cycle of the product,
  which is per machine), with 0.5 to 3 % rejects.

Times are integer seconds since the Unix epoch (UTC). Everything derives from the seed:
the same spec gives the same rows, whatever the number of worker processes.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from api.calendar import Shift, ShiftException, merge_windows, shift_windows

TZ_NAME = "Europe/Berlin"
TZ = ZoneInfo(TZ_NAME)
FIRST_DAY = date(2025, 1, 1)
PER_LINE = 5
LINES_PER_AREA = 5
MICRO_STOP_S = 120.0
N_PRODUCTS = 40
PRODUCTS_PER_LINE = 6
CYCLES = (0.8, 1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0)
SHIFTS = [
    *(
        Shift(name, day, time(h), timedelta(hours=8))
        for day in range(5)
        for name, h in (("early", 6), ("late", 14), ("night", 22))
    ),
    *(Shift(name, 5, time(h), timedelta(hours=8)) for name, h in (("early", 6), ("late", 14))),
]
HOLIDAYS = ((1, 1), (5, 1), (10, 3), (12, 24), (12, 25), (12, 26), (12, 31))
# (state, reason, code, weight, shortest s, longest s) of the stops between runs
STOPS = (
    ("stopped", "micro-stop", "MS", 50, 20, 110),
    ("faulted", "jam", "F-JAM", 10, 120, 1500),
    ("faulted", "motor overload", "F-MOT", 5, 300, 1800),
    ("faulted", "sensor", "F-SEN", 5, 60, 900),
    ("starved", "no material", "S-MAT", 12, 60, 900),
    ("blocked", "downstream full", "B-DWN", 12, 60, 600),
    ("idle", "no operator", "I-OPR", 6, 120, 1200),
)
STOP_WEIGHTS = [s[3] for s in STOPS]
# code, reason, category, planned: the downtime reason tree of the plant
REASONS = [
    *((code, reason, state, False) for state, reason, code, *_ in STOPS),
    ("CO", "changeover", "changeover", True),
    ("PM", "planned maintenance", "planned_maintenance", True),
]

Span = tuple[int, int]
# (start, end, state, reason, code): one state interval in epoch seconds
State = tuple[int, int, str, str | None, str | None]


@dataclass(frozen=True)
class Spec:
    """What to generate: machine count, days from FIRST_DAY (local midnight) and the seed."""

    machines: int = 100
    days: int = 365
    seed: int = 4

    @property
    def lines(self) -> int:
        """Lines of PER_LINE machines (the last one may be shorter)."""
        return math.ceil(self.machines / PER_LINE)

    @property
    def start(self) -> datetime:
        """First instant (local midnight of FIRST_DAY), UTC."""
        return datetime.combine(FIRST_DAY, time(0), tzinfo=TZ).astimezone(UTC)

    @property
    def end(self) -> datetime:
        """End of the data (local midnight ``days`` later), UTC."""
        last = FIRST_DAY + timedelta(days=self.days)
        return datetime.combine(last, time(0), tzinfo=TZ).astimezone(UTC)


def epoch(dt: datetime) -> int:
    """Whole seconds since the Unix epoch of an aware datetime."""
    return int(dt.timestamp())


def holidays(spec: Spec) -> list[ShiftException]:
    """Whole-day holidays inside the spec's days."""
    out = []
    for i in range(spec.days):
        day = FIRST_DAY + timedelta(days=i)
        if (day.month, day.day) in HOLIDAYS:
            out.append(ShiftException(day, "holiday"))
    return out


def shift_spans(spec: Spec) -> list[tuple[str, int, int]]:
    """(shift name, start, end) of every shift occurrence, holidays removed."""
    windows = shift_windows(
        SHIFTS, tz=TZ, start=spec.start, end=spec.end, exceptions=holidays(spec)
    )
    return [(w.name, epoch(w.start), epoch(w.end)) for w in windows]


def scheduled(spec: Spec) -> list[Span]:
    """The shifts merged: the time machines are meant to produce."""
    windows = shift_windows(
        SHIFTS, tz=TZ, start=spec.start, end=spec.end, exceptions=holidays(spec)
    )
    return [(epoch(a), epoch(b)) for a, b in merge_windows(windows)]


@dataclass(frozen=True)
class Product:
    """A product code and its line default ideal cycle time."""

    code: str
    cycle_s: float


def products(spec: Spec) -> list[Product]:
    """The plant's product catalogue."""
    rng = random.Random(f"{spec.seed}:products")
    return [Product(f"BP-{i:03d}", rng.choice(CYCLES)) for i in range(1, N_PRODUCTS + 1)]


@dataclass(frozen=True)
class LinePlan:
    """One line's planned downtime, product runs and changeovers."""

    index: int
    breaks: list[Span]
    maintenance: list[Span]
    product_runs: list[tuple[int, str]]  # (from, product code), sorted
    changeovers: list[Span]
    products: list[str]


def line_plan(
    spec: Spec, index: int, shifts: list[tuple[str, int, int]], windows: list[Span]
) -> LinePlan:
    """Breaks staggered by line, maintenance every 4 weeks, product changes with changeovers."""
    rng = random.Random(f"{spec.seed}:line:{index}")
    offset = (index % 4) * 300
    breaks = []
    for _name, a, b in shifts:
        for at, minutes in ((2 * 3600, 15), (4 * 3600 + 1800, 30)):
            start = a + at + offset
            if start + minutes * 60 <= b:
                breaks.append((start, start + minutes * 60))
    saturdays = [
        a
        for name, a, _b in shifts
        if name == "early" and datetime.fromtimestamp(a, TZ).weekday() == 5
    ]
    maintenance = [(a + 3600, a + 5 * 3600) for a in saturdays[index % 4 :: 4]]
    mine = rng.sample([p.code for p in products(spec)], PRODUCTS_PER_LINE)
    first, last = epoch(spec.start), epoch(spec.end)
    current = rng.choice(mine)
    runs, changeovers, t = [(first, current)], [], first
    starts = [a for a, _b in windows]
    while True:
        t += rng.randint(4 * 3600, 12 * 3600)
        if t >= last:
            break
        current = rng.choice([p for p in mine if p != current])
        runs.append((t, current))
        i = bisect_right(starts, t) - 1
        if i >= 0 and t < windows[i][1]:  # inside a shift: the line stops to change over
            changeovers.append((t, t + rng.randint(15, 40) * 60))
    return LinePlan(index, breaks, maintenance, runs, changeovers, mine)


@dataclass(frozen=True)
class MachineJob:
    """Everything one machine's rows derive from (picklable for worker processes)."""

    asset_id: int
    spec: Spec
    number: int  # 0-based over the plant
    line: LinePlan
    windows: list[Span]
    cycles: dict[str, float]  # product code -> this machine's ideal cycle time


def _forced(job: MachineJob) -> list[State]:
    """Line-wide states inside the shifts: breaks, maintenance, changeovers (sorted)."""
    line = job.line
    out: list[State] = [(a, b, "idle", "break", None) for a, b in line.breaks]
    out += [(a, b, "planned_maintenance", "planned maintenance", "PM") for a, b in line.maintenance]
    out += [(a, b, "changeover", "changeover", "CO") for a, b in line.changeovers]
    return sorted(out)


def timeline(job: MachineJob) -> list[State]:
    """The machine's states from spec start to end: contiguous, never overlapping."""
    rng = random.Random(f"{job.spec.seed}:machine:{job.number}")
    mean_run = rng.uniform(1000, 3000)
    forced = _forced(job)
    out: list[State] = []
    cursor, k = epoch(job.spec.start), 0
    for a, b in job.windows:
        if a > cursor:
            out.append((cursor, a, "idle", "off shift", None))
        t = a
        while k < len(forced) and forced[k][1] <= a:
            k += 1
        j = k
        while j < len(forced) and forced[j][0] < b:
            fs, fe, state, reason, code = forced[j]
            fs, fe = max(fs, t), min(fe, b)
            if fe > fs:
                if fs > t:
                    _free(rng, mean_run, t, fs, out)
                out.append((fs, fe, state, reason, code))
                t = fe
            j += 1
        if t < b:
            _free(rng, mean_run, t, b, out)
        cursor = b
    last = epoch(job.spec.end)
    if cursor < last:
        out.append((cursor, last, "idle", "off shift", None))
    return out


def _free(rng: random.Random, mean_run: float, t: int, end: int, out: list[State]) -> None:
    """Running and stops alternating over [t, end)."""
    while t < end:
        e = min(t + max(60, int(rng.expovariate(1 / mean_run))), end)
        out.append((t, e, "running", None, None))
        t = e
        if t >= end:
            return
        state, reason, code, _w, lo, hi = rng.choices(STOPS, STOP_WEIGHTS)[0]
        e = min(t + rng.randint(lo, hi), end)
        out.append((t, e, state, reason, code))
        t = e


# One count row: (time in microseconds since 2000-01-01 UTC, total, good, reject, product)
Count = tuple[int, int, int, int, str]
_PG_EPOCH = 946_684_800


def counts(job: MachineJob, states: list[State]) -> Iterator[Count]:
    """A count row for every minute the machine ran, at a random second of that minute."""
    rng = random.Random(f"{job.spec.seed}:counts:{job.number}")
    speed = rng.uniform(0.85, 0.97)
    reject_rate = rng.uniform(0.005, 0.03)
    first = epoch(job.spec.start)
    run = _running_seconds(states, first, epoch(job.spec.end))
    runs = job.line.product_runs
    p, product = 0, runs[0][1]
    rate = speed / job.cycles[product]
    for m, seconds in enumerate(run):
        if not seconds:
            continue
        t = first + m * 60
        while p + 1 < len(runs) and runs[p + 1][0] <= t:
            p += 1
            product = runs[p][1]
            rate = speed / job.cycles[product]
        total = int(seconds * rate * (0.9 + 0.2 * rng.random()) + rng.random())
        if total:
            reject = min(total, int(total * reject_rate + rng.random()))
            at = (t - _PG_EPOCH + rng.randrange(60)) * 1_000_000 + rng.randrange(1000) * 1000
            yield at, total, total - reject, reject, product


def _running_seconds(states: list[State], first: int, last: int) -> list[int]:
    """Seconds in ``running`` per minute since ``first``."""
    run = [0] * ((last - first) // 60 + 1)
    for a, b, state, _r, _c in states:
        if state != "running":
            continue
        a, b = a - first, b - first
        m0, m1 = a // 60, (b - 1) // 60
        if m0 == m1:
            run[m0] += b - a
            continue
        run[m0] += 60 - a % 60
        for m in range(m0 + 1, m1):
            run[m] += 60
        run[m1] += b - m1 * 60
    return run
