"""Counts placed in a machine's segments (pure, numpy): what OEE sums per bucket.

A count belongs to the segment (see :mod:`api.oee.segments`) of its minute, and so to that
segment's bucket and planned status. A year of one machine is half a million minutes, so
whole UTC hours come from the hourly rollup ``production_counts_1h``: an hour's counts of
one product go to one segment when all its minutes with counts lie in segments of the same
bucket and planned status as its first minute's (``as_first``), or to two when all but the
first minute's lie with the last minute's (``as_last``; the rollup keeps the first
minute's sums apart). Any other hour is read minute by minute, as are the ends of the
range that are not whole hours (:func:`cut_minutes`). Counts at or after the window's end
(or now) count nowhere. Exact: integer sums throughout.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from api.oee.segments import CountSum, Plan

Ints = npt.NDArray[np.int64]
US_PER_MINUTE = 60_000_000
_MINUTE = np.arange(60, dtype=np.int64)


class CountRows(NamedTuple):
    """Counts summed per product and minute (or hour): ``product`` indexes ``products``."""

    products: Sequence[str | None]
    product: Ints
    time: Ints  # the minute's (or hour's) start, µs
    total: Ints
    good: Ints
    reject: Ints


class HourRows(NamedTuple):
    """Rows of production_counts_1h: an hour's sums, its minutes with counts (a bit per
    minute), and its first minute's sums apart."""

    counts: CountRows  # time: the hour's start
    first_minute: Ints
    last_minute: Ints
    minutes: Ints
    first_total: Ints
    first_good: Ints
    first_reject: Ints


class Placed(NamedTuple):
    """Counts with the segment they go to (-1 or the number of segments: none)."""

    products: Sequence[str | None]
    product: Ints
    segment: Ints
    total: Ints
    good: Ints
    reject: Ints


def segment_of(p: Plan, us: Ints) -> Ints:
    """The segment each time lies in: -1 before the window, len(segments) at or after its
    end."""
    return np.searchsorted(np.asarray(p.bounds, dtype=np.int64), us, side="right") - 1


def _classes(p: Plan) -> Ints:
    """Per segment, bucket and planned status as one number; -1 (none) for the places
    before and after the window, at index -1 and len(segments)."""
    bucket = np.asarray(p.bucket, dtype=np.int64)
    inside = np.asarray(p.inside, dtype=np.int64)
    return np.concatenate((bucket * 2 + inside, [-1, -1]))


def cut_hours(p: Plan, rows: HourRows) -> tuple[list[Placed], npt.NDArray[np.bool_]]:
    """The hours' counts placed in segments, and which hours (a mask over the rows) must be
    read minute by minute instead."""
    c = rows.counts
    if not p.bounds:
        return [], np.zeros(len(c.time), dtype=np.bool_)
    cls = _classes(p)
    first = segment_of(p, c.time + rows.first_minute * US_PER_MINUTE)
    last = segment_of(p, c.time + rows.last_minute * US_PER_MINUTE)
    cut = np.flatnonzero(first != last)
    # The class of each minute of the cut hours, and which minutes have counts.
    minute_class = cls[segment_of(p, c.time[cut, None] + _MINUTE * US_PER_MINUTE)]
    counted = ((rows.minutes[cut, None] >> _MINUTE) & 1).astype(np.bool_)
    elsewhere = counted & (minute_class != cls[first[cut], None])
    as_first = ~elsewhere.any(axis=1)
    later = counted & (rows.first_minute[cut, None] != _MINUTE)
    as_last = ~as_first & ~(later & (minute_class != cls[last[cut], None])).any(axis=1)
    whole = np.ones(len(c.time), dtype=np.bool_)
    whole[cut[~as_first]] = False
    split = cut[as_last]
    raw = np.zeros(len(c.time), dtype=np.bool_)
    raw[cut[~as_first & ~as_last]] = True
    placed = [
        Placed(c.products, c.product[whole], first[whole], c.total[whole], c.good[whole],
               c.reject[whole]),
        Placed(c.products, c.product[split], first[split], rows.first_total[split],
               rows.first_good[split], rows.first_reject[split]),
        Placed(c.products, c.product[split], last[split],
               c.total[split] - rows.first_total[split], c.good[split] - rows.first_good[split],
               c.reject[split] - rows.first_reject[split]),
    ]  # fmt: skip
    return placed, raw


def cut_minutes(p: Plan, rows: CountRows) -> Placed:
    """Minutes' counts placed in segments; a minute that began before the window's start
    (which cuts it) goes with the start."""
    if not p.bounds:
        return Placed(rows.products, *(np.zeros(0, dtype=np.int64),) * 5)
    at = np.maximum(rows.time, p.bounds[0])
    return Placed(rows.products, rows.product, segment_of(p, at), rows.total, rows.good,
                  rows.reject)  # fmt: skip


def count_sums(p: Plan, placed: Sequence[Placed]) -> list[CountSum]:
    """The placed counts summed per (bucket, planned or not, product)."""
    products = sorted({x for pl in placed for x in pl.products}, key=lambda x: (x is not None, x))
    index = {x: i for i, x in enumerate(products)}
    cls = np.asarray(p.bucket, dtype=np.int64) * 2 + np.asarray(p.inside, dtype=np.int64)
    keys, values = [], []
    for pl in placed:
        valid = (pl.segment >= 0) & (pl.segment < len(cls))
        remap = np.asarray([index[x] for x in pl.products] or [0], dtype=np.int64)
        keys.append(cls[pl.segment[valid]] * len(products) + remap[pl.product[valid]])
        values.append(np.stack((pl.total[valid], pl.good[valid], pl.reject[valid]), axis=1))
    key = np.concatenate(keys) if keys else np.zeros(0, dtype=np.int64)
    if not len(key):
        return []
    order = np.argsort(key, kind="stable")
    key, value = key[order], np.concatenate(values)[order]
    starts = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
    sums = np.add.reduceat(value, starts, axis=0).tolist()
    out = []
    for k, (t, g, r) in zip(key[starts].tolist(), sums, strict=True):
        c, product = divmod(k, len(products))
        out.append(CountSum(c // 2, bool(c % 2), products[product], t, g, r))
    return out
