"""Running a package on a dataset version: the predictions that quality and fairness judge.

The package is loaded through its contract (``factory.contract.load``) and fed the
dataset's feature columns: either one column per contract input, matched by name, or
the named ``features`` stacked in order into the contract's single ``[-1, n]`` input.
Rows go through in chunks, so an evaluation set larger than memory for activations
still runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import Field

from factory.errors import InvalidInputError
from factory.gates.policies._base import PolicyConfig

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

    from factory.contract import Contract, PackageView
    from factory.store import DatasetVersion, Store

__all__ = ["EvaluationData", "Predictions", "predict_dataset", "is_classifier"]

CHUNK_ROWS = 8192


class EvaluationData(PolicyConfig):
    """Which dataset version to evaluate on, and how its columns feed the model."""

    dataset: str = Field(min_length=1, description="NAME, NAME@VERSION or a digest of a dataset version")
    label: str = Field(min_length=1, description="the column holding the true value")
    features: tuple[str, ...] | None = Field(
        None, description="columns stacked into the model's one input; default: one column per contract input")
    output: str | None = Field(None, description="the output to judge; default 'label', else the first output")


@dataclass(frozen=True)
class Predictions:
    """The model's chosen output on every row, next to the rows it was computed from."""

    dataset: DatasetVersion
    table: pa.Table
    y_pred: np.ndarray
    output: str


def _inputs(contract: Contract, table: pa.Table, features: Sequence[str] | None) -> dict[str, np.ndarray]:
    import numpy as np

    columns = set(table.column_names)
    if features is None:
        missing = [spec.name for spec in contract.inputs if spec.name not in columns]
        if missing:
            raise InvalidInputError(
                f"the dataset has no column(s) {missing} for the inputs of {contract.name}: name the feature columns "
                "with features=[...] (stacked into the model's input in that order)"
            )
        out = {}
        for spec in contract.inputs:
            values = table.column(spec.name).to_numpy(zero_copy_only=False)
            out[spec.name] = values.reshape(-1, *[1] * (len(spec.shape) - 1)).astype(spec.dtype.numpy_name)
        return out
    missing = [f for f in features if f not in columns]
    if missing:
        raise InvalidInputError(f"the dataset has no column(s) {missing}: choose among {sorted(columns)}")
    if len(contract.inputs) != 1 or len(contract.inputs[0].shape) != 2:
        raise InvalidInputError(
            f"{contract.name} takes {len(contract.inputs)} inputs, so features cannot be stacked into one: "
            "leave features unset and give the dataset one column per input, named like the inputs"
        )
    spec = contract.inputs[0]
    if spec.shape[1] not in (-1, len(features)):
        raise InvalidInputError(f"{contract.name}'s input {spec.name!r} takes {spec.shape[1]} values per row, but "
                                f"{len(features)} feature columns were named: name exactly {spec.shape[1]}")
    stacked = np.column_stack([table.column(f).to_numpy(zero_copy_only=False) for f in features])
    return {spec.name: stacked.astype(spec.dtype.numpy_name)}


def _choose_output(contract: Contract, output: str | None) -> str:
    names = [o.name for o in contract.outputs]
    if output is not None:
        if output not in names:
            raise InvalidInputError(f"{contract.name} has no output {output!r}: choose among {names}")
        return output
    return "label" if "label" in names else names[0]


def is_classifier(contract: Contract, output: str) -> bool:
    """Integer or boolean outputs are class labels; floating ones are scores or regressions."""
    return contract.output(output).dtype.numpy_name.startswith(("int", "uint", "bool"))


def predict_dataset(view: PackageView, store: Store, data: EvaluationData, *,
                    extra_columns: Sequence[str] = ()) -> Predictions:
    """Load the package and run it on every row of the dataset version ``data.dataset``."""
    import numpy as np

    version = store.datasets.get(data.dataset)
    names = [c for c, _ in version.schema]
    wanted = set(data.features or [i.name for i in view.contract.inputs]) | {data.label, *extra_columns}
    missing = sorted(c for c in wanted if c not in names)
    if missing:
        raise InvalidInputError(f"dataset {version.ref} has no column(s) {missing}: choose among {names}")
    table = store.datasets.read(version, columns=[c for c in names if c in wanted])
    output = _choose_output(view.contract, data.output)
    model = view.load()
    chunks: list[Any] = []
    for start in range(0, max(table.num_rows, 1), CHUNK_ROWS):
        part = table.slice(start, CHUNK_ROWS)
        if part.num_rows == 0:
            break
        out = model.predict(_inputs(view.contract, part, data.features))[output].numpy()
        if out.ndim == 2 and out.shape[1] > 1:
            out = out.argmax(axis=1)
        chunks.append(out.reshape(len(out), -1)[:, 0] if out.ndim > 1 else out)
    y_pred = np.concatenate(chunks) if chunks else np.empty(0)
    return Predictions(version, table, y_pred, output)
