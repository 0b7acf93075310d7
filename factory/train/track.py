"""``factory.track``: record a script that was not written for factory, without rewriting it.

::

    import factory

    with factory.track("churn-baseline", params={"lr": 0.1}, inputs=["churn@3"]) as run:
        ...                                   # the script as it was
        run.log_metrics({"auc": 0.91}, step=epoch)
        run.log_output("model.onnx")          # stored by digest, recorded on the run

On entry the code state (git commit plus the digest of uncommitted changes) and the
environment (installed distributions) are captured and recorded, the inputs resolved to
digests (a dataset by name or version, an artifact by digest, and a file or URI outside
the store as an ``external`` artifact, so lineage starts at the file), and a run of kind
``track`` is started in ``store.runs`` with the params as its config and all of those
as parents. Metrics become the run's metric series; outputs are stored by digest (a
file as a blob, a folder as a tree), with the run as their parent, and recorded as its
outputs. Leaving the block finishes the run: ``succeeded``, or ``failed`` (``cancelled``
on Ctrl-C) with the exception, which is never swallowed.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from factory.errors import InvalidInputError
from factory.store import is_digest
from factory.train._record import record_code_environment
from factory.train.provenance import capture_code, capture_environment

if TYPE_CHECKING:
    from factory.store import Store

__all__ = ["Tracker", "track"]

log = logging.getLogger(__name__)

RUN_KIND = "track"


def _plain(value: Any) -> Any:
    """A parameter value as JSON can hold it (anything else by its ``repr``)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return repr(value)


class Tracker:
    """One tracked run. Use it through ``factory.track(name)``; it is its own context manager."""

    def __init__(self, name: str, *, store: Store | None = None, params: Mapping[str, Any] | None = None,
                 inputs: Iterable[str | os.PathLike[str]] = (), code_root: str | os.PathLike[str] | None = None):
        if not isinstance(name, str) or not name.strip():
            raise InvalidInputError("factory.track needs a name for the run, e.g. factory.track('churn-baseline')")
        self.name = name
        self._store = store
        self.params: dict[str, Any] = {str(k): _plain(v) for k, v in (params or {}).items()}
        self._inputs = list(inputs)
        self._code_root = code_root
        self.metrics: dict[str, list[tuple[int, float]]] = {}
        self.outputs: dict[str, str] = {}
        self.run: Any = None
        self.code: str | None = None
        self.environment: str | None = None
        self.input_digests: list[str] = []

    @property
    def store(self) -> Store:
        if self._store is None:
            from factory.store import Store

            self._store = Store()
        return self._store

    @property
    def id(self) -> str | None:
        return getattr(self.run, "id", None)

    # -- the block -------------------------------------------------------------------

    def __enter__(self) -> Tracker:
        entry = (sys.argv[0],) if sys.argv and sys.argv[0] and os.path.isfile(sys.argv[0]) else ()
        root = self._code_root or (os.path.dirname(os.path.abspath(entry[0])) if entry else None)
        self.code, self.environment = record_code_environment(
            self.store, capture_code(root, entry=entry), capture_environment())
        self.input_digests = [self._resolve_input(i) for i in self._inputs]
        self.run = self.store.runs.start(RUN_KIND, config=dict(self.params), name=self.name,
                                         parents=[self.code, self.environment, *self.input_digests])
        log.info("tracking %s as run %s", self.name, self.id)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.run is None:
            return
        if error is None:
            self.run.finish("succeeded", params=self.params, outputs=self.outputs)
        else:
            state = "cancelled" if isinstance(error, KeyboardInterrupt) else "failed"
            self.run.finish(state, error=f"{type(error).__name__}: {error}", params=self.params)

    # -- what a script logs ----------------------------------------------------------

    def _require_run(self) -> Any:
        if self.run is None:
            raise InvalidInputError("log to a tracked run inside its block: 'with factory.track(name) as run:'")
        return self.run

    def log_param(self, key: str, value: Any) -> None:
        self.log_params({key: value})

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Parameters set after the run began; each call is an event on the run."""
        run = self._require_run()
        new = {str(k): _plain(v) for k, v in params.items()}
        self.params.update(new)
        run.event("running", params=new)

    def log_metric(self, name: str, value: float, step: int | None = None) -> None:
        self.log_metrics({name: value}, step=step)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Metrics at ``step`` (default: one past the last step of these metrics)."""
        run = self._require_run()
        values = {}
        for name, value in metrics.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InvalidInputError(f"metric {name!r} is {value!r}: log numbers only")
            values[str(name)] = float(value)
        if step is None:
            step = max((len(self.metrics.get(n, ())) for n in values), default=0)
        for name, value in values.items():
            self.metrics.setdefault(name, []).append((step, value))
        run.log_metrics(step, values)

    def log_output(self, path: str | os.PathLike[str], name: str | None = None) -> str:
        """Store a file (or a folder, as a tree) by digest and record it as an output of the run."""
        run = self._require_run()
        source = Path(path)
        label = name or source.name
        if source.is_dir():
            digest = self.store.trees.put(source, name=label, parents=[run.digest]).digest
        elif source.is_file():
            digest = self.store.put_blob(source, name=label, parents=[run.digest]).digest
        else:
            raise InvalidInputError(f"no file or folder at {source}: log an output after writing it")
        run.output(label, digest)
        self.outputs[label] = digest
        return digest

    def log_input(self, source: str | os.PathLike[str]) -> str:
        """Record something read after the run began; returns its digest."""
        run = self._require_run()
        digest = self._resolve_input(source)
        self.input_digests.append(digest)
        run.event("running", input=digest)
        return digest

    def _resolve_input(self, source: str | os.PathLike[str]) -> str:
        """A digest for a digest in the store, a dataset (``name`` or ``name@version``), or a
        file or URI outside the store (recorded as an ``external`` artifact: where it is,
        its size and its SHA-256, its bytes left where they are)."""
        text = os.fspath(source)
        if isinstance(source, str) and is_digest(text):
            if not self.store.artifacts.exists(text):
                raise InvalidInputError(f"input {text} is not in the store: add it first")
            return text
        if "://" in text or os.path.isfile(text):
            return self.store.add_external(text).digest
        if os.path.isdir(text):
            raise InvalidInputError(
                f"input {text} is a folder: log the files it holds (run.log_input(path) for each), "
                "or add it to the store as a dataset and give its NAME@VERSION"
            )
        try:
            return self.store.datasets.get(text).digest
        except (InvalidInputError, KeyError) as exc:
            raise InvalidInputError(
                f"input {text!r} is neither a digest in the store, a file, nor a dataset (NAME or NAME@VERSION): {exc}"
            ) from None


def track(name: str, *, store: Store | None = None, params: Mapping[str, Any] | None = None,
          inputs: Iterable[str | os.PathLike[str]] = (), code_root: str | os.PathLike[str] | None = None) -> Tracker:
    """Track the block that follows as a run named ``name``: ``with factory.track(name) as run:``."""
    return Tracker(name, store=store, params=params, inputs=inputs, code_root=code_root)
