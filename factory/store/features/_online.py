"""The online store: one view's materialized state, answering single-entity lookups fast.

``materialize`` reduces the view's rows to the same *steps* the offline join uses
(``_pit.build_steps``, backfill off): for each entity, the times at which its winning
row changes and the winner's features from then on, using only rows visible by
``up_to`` (event and created time at or before it). A lookup at time ``t`` takes the
last step at or before ``t`` and applies the TTL to the winner's event time, so for
any ``t`` it returns exactly what ``get_historical_features`` returns for a row at
``t`` over the rows known at ``up_to`` (all of them, once ``up_to`` is past the last
row's created time).

Lookups go through a dict from entity key to its range of steps and a bisect within
it: a few microseconds, whatever the number of entities. The state is saved as one
Arrow IPC blob (steps, features and a JSON header) so a restarted process reloads it
instead of recomputing.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from factory.errors import InvalidInputError
import factory.store.features._pit as _pit

__all__ = ["OnlineTable", "materialize_table"]

_V, _EVENT = "__visible_from", "__event_time"
_HEADER = b"factory.online"


def _unit(spec: _pit.PitSpec, features: pa.Table, assume_utc: bool) -> str:
    """Microseconds at least: query times are ``datetime``s, which carry microseconds."""
    times = [_pit.TimeColumn("view source", spec.timestamp, features.column(spec.timestamp))]
    if spec.created_timestamp:
        times.append(_pit.TimeColumn("view source", spec.created_timestamp, features.column(spec.created_timestamp)))
    unit = _pit.check_times(times, assume_utc=assume_utc)
    return unit if unit == "ns" else "us"


def _key_check(name: str, column_type: pa.DataType, view: str) -> Callable[[Any], None]:
    """A check that a lookup key fits entity column ``name``, by the offline join's rule (``_pit._kind``).

    The index is a dict, so without it a float 20.0 would quietly match 20 and a string
    "20" would quietly match nothing.
    """
    kind = _pit._kind(column_type)
    if kind == "integer":
        def fits(value: Any) -> bool:
            return isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    elif kind == "string":
        def fits(value: Any) -> bool:
            return isinstance(value, str)
    elif kind == "binary":
        def fits(value: Any) -> bool:
            return isinstance(value, bytes)
    else:
        def fits(value: Any) -> bool:
            return _kind_of(value) == kind

    def check(value: Any) -> None:
        if value is not None and not fits(value):
            raise InvalidInputError(
                f"entity column {name!r} is {column_type} in feature view {view!r} but the key {value!r} is "
                f"{_kind_of(value) or type(value).__name__} ({type(value).__name__}): give keys of the column's "
                f"kind ({_HINTS.get(kind, f'values that Arrow reads as {column_type}')})"
            )

    return check


_HINTS = {"integer": "e.g. int(key)", "string": "e.g. str(key)", "binary": "bytes"}


def _kind_of(value: Any) -> str | None:
    """The offline join's kind of a Python value (None where Arrow cannot read it)."""
    try:
        return _pit._kind(pa.scalar(value).type)
    except (pa.ArrowException, TypeError, ValueError):
        return None


@dataclass(frozen=True)
class _Header:
    view: str
    view_digest: str
    unit: str
    ttl: int
    up_to: int
    entities: tuple[str, ...]
    features: tuple[str, ...]


def materialize_table(
    features: pa.Table, spec: _pit.PitSpec, up_to: datetime, *, view_digest: str = "", assume_utc: bool = False
) -> OnlineTable:
    """Build the online state of a view from its source rows, as known at ``up_to``.

    ``assume_utc``: read zone-less timestamps as UTC, as ``get_historical_features`` does.
    """
    unit = _unit(spec, features, assume_utc)
    limit = _pit.time_to_units(up_to, unit)
    event, event_nulls = _pit.to_int_time(features.column(spec.timestamp), unit)
    known = event <= limit
    if spec.created_timestamp:
        created, created_nulls = _pit.to_int_time(features.column(spec.created_timestamp), unit)
        if created_nulls is not None:
            created = np.where(created_nulls, event, created)
        known &= created <= limit
    if event_nulls is not None:
        known &= ~event_nulls
    rows = features.filter(pa.array(known)) if not known.all() else features
    empty = rows.slice(0, 0)
    code, valid, _, _ = _pit.encode_entities(rows, empty, spec.entities, left_name="view source", right_name="view source")
    steps = _pit.steps_for(rows, spec, code, valid, unit, allow_backfill=False)
    table = rows.select([*spec.entities, *spec.features]).take(pa.array(steps.row))
    table = table.append_column(_V, pa.array(steps.v, pa.int64())).append_column(_EVENT, pa.array(steps.event, pa.int64()))
    header = _Header(spec.name, view_digest, unit, _pit.ttl_units(spec.ttl, unit), limit, spec.entities, spec.features)
    return OnlineTable(table, header)


class OnlineTable:
    """The materialized steps of one view, indexed by entity key."""

    def __init__(self, table: pa.Table, header: _Header):
        self.header = header
        self.table = table
        self._v = table.column(_V).to_numpy()
        self._event = table.column(_EVENT).to_numpy()
        self._features = [table.column(f).combine_chunks() for f in header.features]
        self._index = self._build_index(table, header.entities)
        self._checks = [_key_check(e, table.schema.field(e).type, header.view) for e in header.entities]

    @staticmethod
    def _build_index(table: pa.Table, entities: Sequence[str]) -> dict[Any, tuple[int, int]]:
        n = table.num_rows
        if n == 0:
            return {}
        keys = [table.column(e).combine_chunks() for e in entities]
        new = np.zeros(n, dtype=np.bool_)
        new[0] = True
        for key in keys:
            # Steps are grouped by entity, so a key differing from the row before starts a group.
            differs = pc.not_equal(key.slice(1), key.slice(0, n - 1))
            new[1:] |= differs.to_numpy(zero_copy_only=False)
        starts = np.flatnonzero(new)
        ends = np.append(starts[1:], n)
        firsts = [k.take(pa.array(starts)).to_pylist() for k in keys]
        names = firsts[0] if len(firsts) == 1 else list(zip(*firsts))
        return dict(zip(names, zip(starts.tolist(), ends.tolist())))

    @property
    def view(self) -> str:
        return self.header.view

    @property
    def up_to(self) -> datetime:
        return _from_units(self.header.up_to, self.header.unit)

    def __len__(self) -> int:
        return len(self._index)

    def key_of(self, key: Any) -> Any:
        """A lookup key from a scalar, a tuple or a mapping of entity columns, each checked for its type."""
        entities = self.header.entities
        if isinstance(key, Mapping):
            try:
                values = tuple(key[e] for e in entities)
            except KeyError as exc:
                raise InvalidInputError(
                    f"the key {dict(key)!r} lacks entity column {exc.args[0]!r} of view {self.view!r}: give {list(entities)}"
                ) from None
        elif len(entities) > 1:
            if not isinstance(key, tuple) or len(key) != len(entities):
                raise InvalidInputError(
                    f"view {self.view!r} has a composite key {list(entities)}: give each key as a tuple or a dict"
                )
            values = key
        else:
            values = (key,)
        for check, value in zip(self._checks, values):
            check(value)
        values = tuple(v.item() if isinstance(v, np.generic) else v for v in values)
        return values[0] if len(values) == 1 else values

    def row(self, key: Any, at: int) -> int | None:
        """The step that answers ``key`` at time ``at`` (in this table's units), TTL applied."""
        span = self._index.get(key)
        if span is None:
            return None
        start, end = span
        j = bisect.bisect_right(self._v, at, start, end) - 1
        if j < start or self._event[j] < at - self.header.ttl:
            return None
        return j

    def get(self, keys: Iterable[Any], at: datetime) -> list[dict[str, Any]]:
        """Feature values for each key at ``at`` (all None where nothing is valid then)."""
        when = _pit.time_to_units(at, self.header.unit)
        out = []
        names = self.header.features
        for key in keys:
            j = self.row(self.key_of(key), when)
            if j is None:
                out.append(dict.fromkeys(names))
            else:
                out.append({name: col[j].as_py() for name, col in zip(names, self._features)})
        return out

    # -- persistence ------------------------------------------------------------

    def to_ipc(self) -> bytes:
        """The state as Arrow IPC stream bytes, with the header in the schema metadata."""
        meta = json.dumps({**self.header.__dict__}, sort_keys=True).encode()
        table = self.table.replace_schema_metadata({_HEADER: meta})
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return sink.getvalue().to_pybytes()

    @classmethod
    def from_ipc(cls, data: bytes) -> OnlineTable:
        table = pa.ipc.open_stream(pa.py_buffer(data)).read_all()
        raw = json.loads((table.schema.metadata or {}).get(_HEADER, b"{}"))
        if not raw:
            raise InvalidInputError("these bytes are not a saved online table: materialize the view again")
        header = _Header(**{**raw, "entities": tuple(raw["entities"]), "features": tuple(raw["features"])})
        return cls(table.replace_schema_metadata(None), header)


def _from_units(value: int, unit: str) -> datetime:
    return pa.scalar(value, pa.timestamp(unit, tz="UTC")).as_py()
