"""Feature views over dataset versions, point-in-time training sets and online lookups.

A ``FeatureView`` names an event table (a dataset version, pinned by digest), its
entity key, event time, optional created time, TTL and feature columns. Registered, it
is a ``feature-view`` artifact whose parent is that dataset version, under the ref
``feature-view/<name>``; ingesting rows makes a new dataset version and a new view
version pinned to it.

``get_historical_features`` joins entity rows against views by the rule in
``factory.store.features._pit`` (latest event at or before the row's time, within the TTL, no
value created after the row's time unless ``allow_backfill``) and records the result
as a dataset version whose parents are the view versions. ``materialize`` and
``get_online_features`` serve the same values online (``factory.store.features._online``).

Output columns: the entity rows' columns, then each view's features under their own
names; a feature name that is not unique (it appears in two views, or is already a
column of the entity rows) is written ``<view>__<feature>``, as is every feature with
``full_names=True``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from factory.errors import InvalidInputError, NotFoundError
from factory.store.artifacts import Artifact, ArtifactKind, Digest
import factory.store.features._pit as _pit

if TYPE_CHECKING:
    from typing import Protocol

    import ray.data

    from factory.store._parts import StoreParts
    from factory.store.datasets import DatasetStore, DatasetVersion
    from factory.store.features._online import OnlineTable

    class FeatureHost(StoreParts, Protocol):
        """A store's core parts and its dataset versions: what feature views need."""

        datasets: DatasetStore

__all__ = ["FeatureStore", "FeatureView", "HistoricalFeatures", "ViewVersion"]

log = logging.getLogger(__name__)

_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_REF = "feature-view/"
_ONLINE_REF = "feature-online/"
# Past this many input rows (entity rows plus feature rows) "auto" runs the join on Ray Data.
RAY_THRESHOLD_ROWS = 200_000_000


class FeatureView(BaseModel):
    """A feature view: which columns of which dataset version, keyed how, valid for how long.

    The TTL bound is inclusive: a row at time ``t`` is served the latest event with
    ``t - ttl <= event_ts <= t`` (and, unless backfill is allowed, created by ``t``), so a
    value exactly ``ttl`` old is still served, one a tick older is not.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=_NAME, description="letters, digits, '.', '_', '-'")
    entities: tuple[str, ...] = Field(min_length=1, description="the entity key column(s)")
    timestamp: str = Field(min_length=1, description="the event time column")
    created_timestamp: str | None = Field(default=None, description="when each row was written (optional)")
    ttl: timedelta = Field(description="how long a value stays valid after its event time")
    features: tuple[str, ...] = Field(min_length=1, description="the feature columns")
    source: Digest = Field(description="the dataset version holding the rows")

    @field_validator("ttl")
    @classmethod
    def _positive(cls, ttl: timedelta) -> timedelta:
        if ttl <= timedelta(0):
            raise ValueError("ttl must be positive, e.g. '1 day' as 86400 seconds or 'P1D'")
        return ttl

    @model_validator(mode="after")
    def _distinct(self) -> FeatureView:
        columns = [*self.entities, self.timestamp, *([self.created_timestamp] if self.created_timestamp else []), *self.features]
        twice = sorted({c for c in columns if columns.count(c) > 1})
        if twice:
            raise ValueError(f"column(s) {', '.join(twice)} appear in more than one role: give each column one role")
        return self

    @property
    def columns(self) -> list[str]:
        """Every column the view reads from its source."""
        extra = [self.created_timestamp] if self.created_timestamp else []
        return [*self.entities, self.timestamp, *extra, *self.features]

    def spec(self) -> _pit.PitSpec:
        return _pit.PitSpec(self.name, self.entities, self.timestamp, self.created_timestamp, self.ttl, self.features)


@dataclass(frozen=True)
class ViewVersion:
    """A registered view: its definition and the digest naming this version of it."""

    digest: str
    view: FeatureView

    @property
    def name(self) -> str:
        return self.view.name


@dataclass(frozen=True)
class HistoricalFeatures:
    """A point-in-time join: the rows (input order) and, if recorded, their dataset version.

    When the join ran on Ray from a Ray Dataset (or a dataset reference) the rows never
    come to the driver: ``table`` is None and ``dataset`` holds them (the recorded
    version's rows, read back from Lance, or the lazy join when not recorded).
    """

    table: pa.Table | None
    version: DatasetVersion | None
    views: tuple[str, ...]
    dataset: ray.data.Dataset | None = None


def _is_ray_dataset(rows: Any) -> bool:
    return type(rows).__module__.startswith("ray.data") and hasattr(rows, "map_batches")


def _as_table(rows: Any) -> pa.Table:
    if isinstance(rows, pa.Table):
        return rows
    if isinstance(rows, pa.RecordBatch):
        return pa.Table.from_batches([rows])
    if type(rows).__module__.startswith("pandas"):
        return pa.Table.from_pandas(rows, preserve_index=False)
    if isinstance(rows, list):
        return pa.Table.from_pylist(rows)
    raise InvalidInputError(
        f"cannot read entity rows from a {type(rows).__name__}: give a pyarrow.Table, a pandas DataFrame, "
        "a list of dicts or a dataset reference"
    )


class FeatureStore:
    """Register views, ingest rows, build training sets and serve features online."""

    def __init__(self, store: FeatureHost, *, clock: Callable[[], datetime] | None = None):
        self.store = store
        self._clock = clock or store.clock or (lambda: datetime.now(UTC))
        self._online: dict[str, OnlineTable] = {}

    # -- views ------------------------------------------------------------------

    def register(self, view: FeatureView) -> Artifact:
        """Record ``view`` (checked against its source) and point ``feature-view/<name>`` at it."""
        source = self.store.datasets.get(view.source)
        types = dict(source.schema)
        missing = [c for c in view.columns if c not in types]
        if missing:
            raise InvalidInputError(
                f"view {view.name!r}: its source {source.ref} has no column(s) {', '.join(missing)} "
                f"(it has {', '.join(types)}): fix the view's column names"
            )
        for col in [view.timestamp, *([view.created_timestamp] if view.created_timestamp else [])]:
            if not types[col].startswith("timestamp["):
                raise InvalidInputError(
                    f"view {view.name!r}: column {col!r} of {source.ref} is {types[col]}, not a timestamp: "
                    "store it as a timestamp with a time zone (e.g. timestamp[us, tz=UTC])"
                )
        artifact = self.store.artifacts.add(ArtifactKind.FEATURE_VIEW, metadata=view, parents=[view.source], name=view.name)
        ref = _REF + view.name
        if self.store.refs.get(ref) != artifact.digest:
            self.store.refs.set(ref, artifact.digest, reason=f"register view on {source.ref}")
        log.info("feature view %s -> %s", view.name, artifact.digest)
        return artifact

    def get(self, ref: str | FeatureView | ViewVersion) -> ViewVersion:
        """A view by name (its latest version), ``name@N`` or digest."""
        if isinstance(ref, ViewVersion):
            return ref
        if isinstance(ref, FeatureView):
            ref = ref.name
        if not isinstance(ref, str) or not ref:
            raise InvalidInputError("give a feature view as NAME, NAME@VERSION or a digest")
        if "@" in ref:
            name, _, number = ref.rpartition("@")
            versions = self.versions(name)
            if not number.isdigit() or not 1 <= int(number) <= len(versions):
                raise NotFoundError(f"feature view {name!r} has versions 1 to {len(versions)}, not {number!r}")
            return versions[int(number) - 1]
        digest = self.store.refs.get(_REF + ref) if re.fullmatch(_NAME, ref) else None
        if digest is None:
            if not re.fullmatch(r"(sha256:)?[0-9a-f]{6,64}", ref):
                raise NotFoundError(f"no feature view named {ref!r}: register it first (see 'factory features list')")
            digest = self.store.artifacts.resolve(ref)
        artifact = self.store.artifacts.get(digest)
        if artifact.kind != ArtifactKind.FEATURE_VIEW:
            raise NotFoundError(f"{digest} is a {artifact.kind} artifact, not a feature view")
        return ViewVersion(artifact.digest, artifact.meta(FeatureView))

    def versions(self, name: str) -> list[ViewVersion]:
        """Every version the view's ref has pointed at, oldest first."""
        seen: dict[str, None] = {}
        for change in self.store.refs.history(_REF + name):
            if change.new is not None:
                seen.setdefault(change.new)
        if not seen:
            raise NotFoundError(f"no feature view named {name!r}: register it first")
        return [ViewVersion(d, self.store.artifacts.get(d).meta(FeatureView)) for d in seen]

    def list(self) -> list[ViewVersion]:
        """The latest version of every view, by name."""
        return [self.get(r.name.removeprefix(_REF)) for r in self.store.refs.list(_REF)]

    def source(self, ref: str | ViewVersion) -> pa.Table:
        """The view's rows: only its columns, from the dataset version it pins."""
        view = self.get(ref).view
        return self.store.datasets.read(view.source, columns=view.columns)

    # -- ingestion --------------------------------------------------------------

    def ingest(self, view_name: str, batch: Any) -> ViewVersion:
        """Add rows to a view's source: a new dataset version and a new view version.

        Identical rows are one event, so the new version holds the union of old and new
        rows without repeats, and ingesting the same batch again changes nothing.
        """
        from factory.store._canonical import normalize_table, row_classes

        current = self.get(view_name)
        source = self.store.datasets.get(current.view.source)
        old = self.store.datasets.read(source)
        batch = normalize_table(_as_table(batch))
        missing = [c for c in old.column_names if c not in batch.column_names]
        extra = [c for c in batch.column_names if c not in old.column_names]
        if missing or extra:
            raise InvalidInputError(
                f"the batch for view {view_name!r} must have the columns of {source.ref} "
                f"({', '.join(old.column_names)}); missing: {', '.join(missing) or 'none'}, extra: {', '.join(extra) or 'none'}"
            )
        for field in old.schema:
            got = batch.schema.field(field.name).type
            if pa.types.is_timestamp(field.type) and pa.types.is_timestamp(got) and bool(field.type.tz) != bool(got.tz):
                raise InvalidInputError(
                    f"column {field.name!r} of the batch is {got} but {source.ref} has {field.type}: "
                    "give the batch's timestamps the same time zone (naive and aware times cannot be mixed)"
                )
        try:
            batch = batch.select(old.column_names).cast(old.schema)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise InvalidInputError(f"the batch for view {view_name!r} does not match {source.ref}'s types: {exc}") from exc
        union = pa.concat_tables([old, batch])
        _, first = np.unique(row_classes(union), return_index=True)
        union = union.take(pa.array(np.sort(first)))
        added = self.store.datasets.add(union, name=source.name, key=source.key, parents=[source.digest])
        if added.digest == current.view.source:
            return current
        artifact = self.register(current.view.model_copy(update={"source": added.digest}))
        return ViewVersion(artifact.digest, artifact.meta(FeatureView))

    # -- offline ----------------------------------------------------------------

    def get_historical_features(
        self,
        entity_rows: Any,
        views: str | ViewVersion | FeatureView | Sequence[str | ViewVersion | FeatureView],
        *,
        timestamp: str = "event_timestamp",
        allow_backfill: bool = False,
        assume_utc: bool = False,
        full_names: bool = False,
        engine: Literal["auto", "local", "ray"] = "auto",
        record: bool = True,
        name: str = "historical-features",
    ) -> HistoricalFeatures:
        """Each entity row with every view's features as of the row's time (see the module docstring).

        ``entity_rows``: a table (pyarrow, pandas, list of dicts), a dataset reference or a
        Ray Dataset, with the views' entity columns and a ``timestamp`` column. ``record``:
        store the result as dataset ``name``, whose parents are the views (and the entity
        rows' dataset, when given by reference). A Ray Dataset (or a reference, on the ray
        engine) is joined and recorded on the cluster without its rows coming to the driver:
        the result's ``dataset`` holds them, and ``table`` is None.
        """
        if engine not in ("auto", "local", "ray"):
            raise InvalidInputError(f"engine must be 'auto', 'local' or 'ray', not {engine!r}")
        single = isinstance(views, (str, ViewVersion, FeatureView))
        versions = [self.get(v) for v in ([views] if single else views)]
        if not versions:
            raise InvalidInputError("give at least one feature view")
        if len({v.name for v in versions}) != len(versions):
            raise InvalidInputError("a feature view is named twice: give each view once")
        sizes = sum(self.store.datasets.get(v.view.source).num_rows for v in versions)
        parents: list[str] = []
        if isinstance(entity_rows, str):
            rows_version = self.store.datasets.get(entity_rows)
            parents.append(rows_version.digest)
            if engine == "ray" or (engine == "auto" and rows_version.num_rows + sizes > RAY_THRESHOLD_ROWS):
                entity_rows = self.store.datasets.to_ray(rows_version)
            else:
                entity_rows = self.store.datasets.read(rows_version)
        options = {"timestamp": timestamp, "allow_backfill": allow_backfill, "assume_utc": assume_utc}
        metadata = {"timestamp": timestamp, "allow_backfill": allow_backfill}
        if _is_ray_dataset(entity_rows):
            if engine == "local":
                raise InvalidInputError("entity rows given as a Ray Dataset are joined on Ray: use engine='ray' or 'auto'")
            return self._historical_on_ray(entity_rows, versions, options, metadata, full_names=full_names,
                                           record=record, name=name, parents=parents)
        rows = _as_table(entity_rows)
        names = self._output_names(rows.column_names, versions, full_names)
        use_ray = engine == "ray" or (engine == "auto" and rows.num_rows + sizes > RAY_THRESHOLD_ROWS)
        out = rows
        for version in versions:
            spec = version.view.spec()
            if use_ray:
                import factory.store.features._pit_ray as _pit_ray

                source, source_schema, source_rows = self._ray_source(version)
                joined = _pit_ray.join(rows, source, spec, view_schema=source_schema, view_rows=source_rows,
                                       **options)
            else:
                joined = _pit.join(rows, self.source(version), spec, **options)
            for feature in spec.features:
                out = out.append_column(names[(version.name, feature)], joined.column(feature))
        digests = tuple(v.digest for v in versions)
        recorded = None
        if record:
            recorded = self.store.datasets.add(out, name=name, parents=[*digests, *parents],
                                               metadata={"feature_views": list(digests), **metadata})
        return HistoricalFeatures(out, recorded, digests)

    def _historical_on_ray(
        self, rows: ray.data.Dataset, versions: Sequence[ViewVersion], options: dict[str, Any],
        metadata: dict[str, Any], *, full_names: bool, record: bool, name: str, parents: Sequence[str],
    ) -> HistoricalFeatures:
        """The join of a Ray Dataset of entity rows, view after view, recorded without collecting a row."""
        import factory.store.features._pit_ray as _pit_ray
        from factory.store.datasets._streamed import arrow_schema

        schema = arrow_schema(rows)
        names = self._output_names(schema.names, versions, full_names)
        sources = [self._ray_source(version) for version in versions]
        count = None
        if not all(_pit_ray.broadcasts(n, source_schema) for _, source_schema, n in sources):
            count = rows.count()  # the same after every view (one output row per entity row): counted once
        for version, (source, source_schema, source_rows) in zip(versions, sources, strict=True):
            spec = version.view.spec()
            rows, schema = _pit_ray.join_dataset(
                rows, source, spec, names={f: names[(version.name, f)] for f in spec.features},
                entity_schema=schema, view_schema=source_schema, num_rows=count, view_rows=source_rows, **options)
        digests = tuple(v.digest for v in versions)
        if not record:
            return HistoricalFeatures(None, None, digests, rows)
        recorded = self.store.datasets.add_ray(rows, name=name, parents=[*digests, *parents], schema=schema,
                                               metadata={"feature_views": list(digests), **metadata})
        return HistoricalFeatures(None, recorded, digests, self.store.datasets.to_ray(recorded))

    def _ray_source(self, version: ViewVersion) -> tuple[ray.data.Dataset, pa.Schema, int]:
        """A view's rows as a Ray Dataset, their schema (which an empty Ray Dataset does not know) and count.

        Blocks of about a million rows: Ray's default of 200 blocks makes tiny ones, each a
        task to schedule, for a view of modest size.
        """
        source = self.store.datasets.get(version.view.source)
        blocks = max(1, -(-source.num_rows // 1_000_000))
        schema = self.store.datasets.lance(source).schema
        return (self.store.datasets.to_ray(source, columns=version.view.columns, blocks=blocks),
                pa.schema([schema.field(c) for c in version.view.columns]), source.num_rows)

    @staticmethod
    def _output_names(columns: Sequence[str], versions: Sequence[ViewVersion], full: bool) -> dict[tuple[str, str], str]:
        counts: dict[str, int] = {}
        for v in versions:
            for f in v.view.features:
                counts[f] = counts.get(f, 0) + 1
        taken = set(columns)
        names = {}
        for v in versions:
            for f in v.view.features:
                plain = not full and counts[f] == 1 and f not in taken
                names[(v.name, f)] = f if plain else f"{v.name}__{f}"
        clash = set(columns) & {n for n in names.values()}
        if clash:
            raise InvalidInputError(
                f"the entity rows already have column(s) {', '.join(sorted(clash))}: rename them"
            )
        return names

    # -- online -----------------------------------------------------------------

    def materialize(
        self, view: str | ViewVersion, up_to: datetime | None = None, *, assume_utc: bool = False
    ) -> OnlineTable:
        """Load a view's rows known at ``up_to`` (default now) into the online store, and save them.

        ``assume_utc``: read the view's zone-less timestamps as UTC, as the offline join does
        with the same flag, so a view that joins offline can be served online.
        """
        from factory.store.features._online import materialize_table

        version = self.get(view)
        up_to = up_to or self._clock()
        table = materialize_table(self.source(version), version.view.spec(), up_to, view_digest=version.digest,
                                  assume_utc=assume_utc)
        blob = self.store.put_blob(table.to_ipc(), name=f"online-{version.name}", parents=[version.digest])
        self.store.refs.set(_ONLINE_REF + version.name, blob.digest, reason=f"materialize up to {up_to.isoformat()}")
        self._online[version.name] = table
        log.info("materialized %s up to %s: %d entities", version.name, up_to.isoformat(), len(table))
        return table

    def online_table(self, name: str) -> OnlineTable:
        """The online state of view ``name``: in memory, else reloaded from the store."""
        table = self._online.get(name)
        if table is None:
            from factory.store.features._online import OnlineTable

            digest = self.store.refs.get(_ONLINE_REF + name)
            if digest is None:
                raise NotFoundError(f"view {name!r} is not materialized: run materialize({name!r}) first")
            table = self._online[name] = OnlineTable.from_ipc(self.store.blobs.get(digest))
        return table

    def get_online_features(
        self, views: str | Sequence[str], keys: Iterable[Any], *, at: datetime | None = None, full_names: bool = False
    ) -> list[dict[str, Any]]:
        """For each entity key, the views' features served at ``at`` (default now), TTL applied.

        A key is a scalar for a one-column entity, else a tuple or a dict by column.
        A feature name found in several of the views is written ``<view>__<feature>``.
        """
        names = [views] if isinstance(views, str) else list(views)
        tables = [self.online_table(n) for n in names]
        when = at or self._clock()
        keys = list(keys)
        if len(tables) == 1 and not full_names:
            return tables[0].get(keys, when)
        counts: dict[str, int] = {}
        for t in tables:
            for f in t.header.features:
                counts[f] = counts.get(f, 0) + 1
        out: list[dict[str, Any]] = [{} for _ in keys]
        for t in tables:
            for merged, values in zip(out, t.get(keys, when)):
                for f, value in values.items():
                    merged[f if not full_names and counts[f] == 1 else f"{t.view}__{f}"] = value
        return out
