"""The demo's data: a generated credit book with timestamps, an entity key and a sensitive attribute.

Nothing is downloaded. A seeded generator writes three event tables for one population
of customers: profile snapshots (income in 10k, debt ratio, tenure in decades), card activity (utilisation,
late payments) and loan applications labelled with whether the loan defaulted. The
default risk depends on the features *as they were when the customer applied*, so a
training set built by a point-in-time join learns the real signal and one built from
the latest values would leak the future. ``gender`` is recorded on every application and
is independent of risk (balanced at every risk level): the fairness gate compares groups by it.

``month`` selects which slice of time a batch covers, so the demo can ingest a second
month as a new dataset version; ``corrupt`` gives the labels a faulty upstream job would
write (the defaults of high-utilisation customers recorded inverted), the deliberately
worse candidate's data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import pyarrow as pa

__all__ = ["CreditBook", "TTL", "PROFILE", "ACTIVITY", "FEATURES", "LABEL", "SENSITIVE", "ENTITY", "generate", "corrupt_labels"]

ENTITY = "customer_id"
LABEL = "defaulted"
SENSITIVE = "gender"
PROFILE = ("income_10k", "debt_ratio", "tenure_decades")
ACTIVITY = ("utilization", "late_payments_90d")
FEATURES = PROFILE + ACTIVITY

_START = np.datetime64("2026-01-01T00:00:00", "us")
_DAY_US = 86_400 * 1_000_000
_MONTH_DAYS = 30


@dataclass(frozen=True)
class CreditBook:
    """One month of the book: the event tables and the applications to label."""

    profiles: pa.Table
    activity: pa.Table
    applications: pa.Table


def _ts(values_us: np.ndarray) -> pa.Array:
    return pa.array(_START + values_us.astype("timedelta64[us]"), pa.timestamp("us", tz="UTC"))


def _risk(income_10k, debt_ratio, tenure, utilization, late) -> np.ndarray:
    """Log-odds of default from the features the customer had at application time (all on unit-ish scales)."""
    return (-1.2 - 0.35 * (income_10k - 5.5) + 3.2 * (debt_ratio - 0.35) - 1.2 * (tenure - 0.6)
            + 2.6 * (utilization - 0.45) + 0.55 * late)


def generate(customers: int, applications: int, *, month: int = 0, seed: int = 7) -> CreditBook:
    """The book for ``month`` (0-based): per customer two profile snapshots and four activity
    reports spread over the month, and ``applications`` applications in its second half."""
    rng = np.random.default_rng([seed, month])
    base = np.random.default_rng(seed)  # who the customers are stays the same every month
    ids = np.arange(customers, dtype=np.int64)
    income0 = base.lognormal(np.log(50.0), 0.45, customers)
    tenure0 = base.uniform(0.2, 20.0, customers)
    debt0 = np.clip(base.beta(2.2, 4.0, customers), 0.0, 1.0)
    util0 = np.clip(base.beta(2.0, 2.5, customers), 0.0, 1.0)
    offset = month * _MONTH_DAYS * _DAY_US

    snaps = 2
    p_ids = np.repeat(ids, snaps)
    p_time = offset + rng.integers(0, _MONTH_DAYS * _DAY_US, p_ids.size)
    p_time[::snaps] = offset + rng.integers(0, _DAY_US, customers)  # every customer is known from day one
    drift = 1.0 + 0.02 * month
    profiles = pa.table({
        ENTITY: pa.array(p_ids),
        "ts": _ts(p_time),
        "income_10k": pa.array((np.repeat(income0, snaps) / 10.0 * drift * rng.normal(1.0, 0.05, p_ids.size))
                               .astype(np.float32)),
        "debt_ratio": pa.array(np.clip(np.repeat(debt0, snaps) + rng.normal(0, 0.05, p_ids.size), 0, 1)
                               .astype(np.float32)),
        "tenure_decades": pa.array(((np.repeat(tenure0, snaps) + month / 12.0) / 10.0).astype(np.float32)),
    })

    reports = 4
    a_ids = np.repeat(ids, reports)
    a_time = offset + rng.integers(0, _MONTH_DAYS * _DAY_US, a_ids.size)
    a_time[::reports] = offset + rng.integers(0, _DAY_US, customers)
    util = np.clip(np.repeat(util0, reports) + rng.normal(0, 0.12, a_ids.size), 0, 1)
    late = rng.poisson(0.25 + 1.5 * util ** 3)
    activity = pa.table({
        ENTITY: pa.array(a_ids),
        "ts": _ts(a_time),
        "utilization": pa.array(util.astype(np.float32)),
        "late_payments_90d": pa.array(late.astype(np.float32)),
    })

    who = rng.choice(customers, size=applications, replace=applications > customers)  # independent rows
    when = offset + rng.integers(_MONTH_DAYS // 2 * _DAY_US, _MONTH_DAYS * _DAY_US, applications)
    features = _as_of(profiles, activity, who, when)
    logit = _risk(*(features[name] for name in FEATURES))
    defaulted = (rng.random(applications) < 1.0 / (1.0 + np.exp(-5.0 * logit))).astype(np.int64)
    apps = pa.table({
        "application_id": pa.array(np.arange(applications, dtype=np.int64) + month * 10_000_000),
        ENTITY: pa.array(who.astype(np.int64)),
        "ts": _ts(when),
        SENSITIVE: pa.array(_balanced_groups(rng, logit, when)),
        LABEL: pa.array(defaulted),
    })
    return CreditBook(profiles, activity, apps)


def _balanced_groups(rng: np.random.Generator, risk: np.ndarray, when: np.ndarray, bins: int = 4) -> np.ndarray:
    """Genders independent of risk and balanced at every risk level and time: within each slice of time,
    applicants ordered by risk form pairs and a coin decides which of each pair is which (so even a small,
    recent evaluation set is fair by construction rather than by luck)."""
    out = np.empty(risk.size, dtype=object)
    slices = np.array_split(np.argsort(when, kind="stable"), bins)
    for members in slices:
        order = members[np.argsort(risk[members], kind="stable")]
        flip = np.repeat(rng.random((order.size + 1) // 2) < 0.5, 2)[: order.size]
        alternate = (np.arange(order.size) % 2 == 1) ^ flip
        out[order] = np.where(alternate, "female", "male")
    return out.astype(str)


def _as_of(profiles: pa.Table, activity: pa.Table, who: np.ndarray, when: np.ndarray) -> dict[str, np.ndarray]:
    """Each feature's latest value at or before ``when`` for customer ``who`` (the truth the label follows)."""
    out: dict[str, np.ndarray] = {}
    for table, names in ((profiles, PROFILE), (activity, ACTIVITY)):
        ent = table[ENTITY].to_numpy()
        ts = table["ts"].cast(pa.int64()).to_numpy() - _START.astype(np.int64)
        order = np.lexsort((ts, ent))
        ent, ts = ent[order], ts[order]
        cols = {n: table[n].to_numpy()[order] for n in names}
        # the position of the last event of ``who`` at or before ``when``: search on (entity, time) pairs
        keys = ent.astype(np.float64) * 1e16 + ts
        pos = np.searchsorted(keys, who.astype(np.float64) * 1e16 + when, side="right") - 1
        found = (pos >= 0) & (ent[np.maximum(pos, 0)] == who)
        for n in names:
            values = cols[n][np.maximum(pos, 0)].astype(np.float64)
            out[n] = np.where(found, values, np.nanmean(cols[n]))
    return out


def corrupt_labels(table: pa.Table, *, column: str = "utilization", above: float = 0.5) -> pa.Table:
    """``table`` with the label inverted on every row whose ``column`` exceeds ``above`` (a faulty join upstream)."""
    import pyarrow.compute as pc

    flip = pc.greater(table[column], above)
    label = table[LABEL]
    flipped = pc.if_else(flip, pc.subtract(pa.scalar(1, label.type), label), label)
    return table.set_column(table.schema.get_field_index(LABEL), LABEL, flipped)


TTL = timedelta(days=60)
