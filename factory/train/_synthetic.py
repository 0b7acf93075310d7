"""A generated tabular classification problem, for examples, benchmarks and tests.

Rows are keyed by ``id``; the label is the argmax of a fixed random linear map of the
features plus noise, so an MLP learns it well but not perfectly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa

    from factory.train.config import TrainingConfig

__all__ = ["classification_table", "feature_names", "mlp_config"]


def feature_names(count: int) -> list[str]:
    return [f"f{i:02d}" for i in range(count)]


def classification_table(rows: int, *, features: int = 8, classes: int = 2, seed: int = 0) -> pa.Table:
    """``rows`` rows of ``id``, ``f00``..``fNN`` (float32) and ``label`` (int64 class ids)."""
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features)).astype(np.float32)
    weights = rng.normal(size=(features, classes))
    label = np.argmax(x @ weights + 0.3 * rng.normal(size=(rows, classes)), axis=1).astype(np.int64)
    columns = {"id": pa.array(np.arange(rows, dtype=np.int64))}
    columns.update({name: pa.array(x[:, i]) for i, name in enumerate(feature_names(features))})
    columns["label"] = pa.array(label)
    return pa.table(columns)


def mlp_config(dataset: str, *, features: int | Sequence[str], name: str = "toy", **settings: Any) -> TrainingConfig:
    """A config training ``mlp-classifier@1`` on ``features`` (a count of ``classification_table``
    columns, or names) to predict ``label``; ``settings`` replace whole sections."""
    from factory.train.config import TrainingConfig

    columns = feature_names(features) if isinstance(features, int) else list(features)
    data: dict[str, Any] = {
        "name": name,
        "dataset": dataset,
        "label": "label",
        "features": columns,
        "architecture": "mlp-classifier@1",
        "architecture_config": {"in_features": len(columns), "out_features": 2, "hidden": [32]},
        "hyperparameters": {"lr": 0.01, "batch_size": 32},
        "compute": {"workers": 2, "cpus_per_worker": 0.5},
    }
    data.update(settings)
    return TrainingConfig.model_validate(data)
