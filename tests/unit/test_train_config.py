"""``TrainingConfig``: what users write, refused with the setting and the fix when it cannot run."""

from __future__ import annotations

import pytest
import yaml

from factory.errors import InvalidInputError
from factory.train import TrainingConfig, load_config
from factory.train.config import parse_config

DIGEST = "sha256:" + "ab" * 32


def config(**overrides) -> dict:
    base = {
        "name": "fraud",
        "dataset": DIGEST,
        "label": "is_fraud",
        "features": ["amount", "hour"],
        "architecture": "mlp-classifier@1",
        "architecture_config": {"in_features": 2, "out_features": 2},
    }
    base.update(overrides)
    return base


def test_a_full_config_loads_from_yaml(tmp_path):
    """Every section a user may write loads from YAML, frozen, with its digest stable."""
    data = config(
        hyperparameters={"lr": 0.01, "batch_size": 64, "optimizer": "sgd", "momentum": 0.9, "weight_decay": 1e-4},
        compute={"tier": "cpu", "workers": 2, "cpus_per_worker": 0.5},
        strategy={"kind": "deepspeed", "zero_stage": 2},
        seed=7, epochs=5, max_failures=2, checkpoint={"every_steps": 100, "keep": 4},
    )
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(data))
    cfg = load_config(path)
    assert cfg.strategy.zero_stage == 2 and cfg.checkpoint.every_steps == 100 and cfg.checkpoint.every_epochs is None
    assert cfg.compute.resources_per_worker() == {"CPU": 0.5}
    assert cfg.digest == TrainingConfig.model_validate(data).digest
    assert cfg.digest != TrainingConfig.model_validate({**data, "seed": 8}).digest
    with pytest.raises(Exception):
        cfg.seed = 1  # frozen


def test_strategy_may_be_a_word_and_tiers_map_to_gpus():
    """'ddp' alone is a strategy; a GPU tier reserves one GPU per worker of its accelerator type."""
    cfg = TrainingConfig.model_validate(config(strategy="ddp", compute={"tier": "gpu-a100", "workers": 2}))
    assert cfg.strategy.kind == "ddp"
    assert cfg.compute.resources_per_worker() == {"CPU": 1.0, "GPU": 1.0}
    assert cfg.compute.accelerator == "A100"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"dataset": "fraud"}, "not a dataset version digest"),
        ({"dataset": "./data/fraud.csv"}, "never a path or a name"),
        ({"architecture": "mlp-classifier"}, "is not NAME@VERSION"),
        ({"features": ["amount", "amount"]}, "listed twice"),
        ({"features": ["amount", "is_fraud"]}, "both the label and a feature"),
        ({"hyperparameters": {"lr": 0}}, "hyperparameters.lr"),
        ({"hyperparameters": {"momentum": 0.9}}, "momentum applies to optimizer 'sgd' only"),
        ({"hyperparameters": {"batch_size": 10}, "compute": {"workers": 3}}, "does not split evenly across 3"),
        ({"strategy": "deepspeed"}, "needs a zero_stage"),
        ({"strategy": {"kind": "ddp", "zero_stage": 2}}, "zero_stage applies to strategy deepspeed only"),
        ({"strategy": {"kind": "deepspeed", "zero_stage": 4}}, "strategy.zero_stage"),
        ({"compute": {"tier": "tpu"}}, "compute.tier"),
        ({"compute": {"cpus_per_worker": 0}}, "compute.cpus_per_worker"),
        ({"checkpoint": {"every_epochs": 1, "every_steps": 5}}, "exactly one of"),
        ({"checkpoint": {"keep": 1}}, "checkpoint.keep"),
        ({"epochs": 0}, "epochs"),
        ({"learning_rate": 0.1}, "learning_rate: is not a known setting"),
    ],
)
def test_bad_settings_are_refused_naming_the_setting(overrides, message):
    """A config that cannot run is refused as one line naming the setting and what to change."""
    with pytest.raises(InvalidInputError) as info:
        parse_config(config(**overrides), source="train.yaml")
    text = str(info.value)
    assert message in text and "\n" not in text and text.startswith("train.yaml is not a valid configuration")


def test_missing_settings_are_named(tmp_path):
    """A config without its dataset or label says which settings are required."""
    with pytest.raises(InvalidInputError, match="dataset: is required; label: is required"):
        parse_config({"name": "x", "features": ["a"], "architecture": "mlp-classifier@1"}, source="c.yaml")


def test_unreadable_yaml_is_a_user_error(tmp_path):
    """A missing file, bad YAML or a list instead of a mapping each give one clear line."""
    with pytest.raises(InvalidInputError, match="no config file at"):
        load_config(tmp_path / "absent.yaml")
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(InvalidInputError, match="is not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(InvalidInputError, match="must be a mapping of settings"):
        load_config(tmp_path / "list.yaml")


def test_overrides_replace_dotted_settings_and_are_validated():
    """A sweep's overrides change exactly the named settings, and bad paths or values are refused."""
    cfg = TrainingConfig.model_validate(config())
    tuned = cfg.with_overrides({"hyperparameters.lr": 0.5, "architecture_config.hidden": [8, 8]})
    assert tuned.hyperparameters.lr == 0.5 and tuned.architecture_config["hidden"] == [8, 8]
    assert cfg.hyperparameters.lr != 0.5 and tuned.digest != cfg.digest
    with pytest.raises(InvalidInputError, match="hyperparameters.lrr: is not a known setting"):
        cfg.with_overrides({"hyperparameters.lrr": 0.1})
    with pytest.raises(InvalidInputError, match="does not name a setting"):
        cfg.with_overrides({"seed.x": 1})
    with pytest.raises(InvalidInputError, match="hyperparameters.lr"):
        cfg.with_overrides({"hyperparameters.lr": -1})


def test_a_deepspeed_worker_on_cpu_compiles_nothing():
    """DeepSpeed on CPU workers starts without a C++ compiler or a minute of compiling on each new node."""
    from deepspeed.comm.torch import build_shm_op

    from factory.train._strategies import skip_inference_comm_op

    skip_inference_comm_op()
    assert build_shm_op() is None


def test_zero_buckets_are_no_larger_than_the_model():
    """A small model under ZeRO on CPU steps without making and freeing two 2 GB gradient buffers each step."""
    from factory.train._strategies import deepspeed_config

    config = TrainingConfig.model_validate({
        "name": "toy", "dataset": "sha256:" + "0" * 64, "label": "label", "features": ["a"],
        "architecture": "mlp-classifier@1", "strategy": {"kind": "deepspeed", "zero_stage": 2}})
    zero = deepspeed_config(config, 2, parameters=4_242)["zero_optimization"]
    assert zero == {"stage": 2, "reduce_bucket_size": 4_242, "allgather_bucket_size": 4_242}
    big = deepspeed_config(config, 2, parameters=10**10)["zero_optimization"]
    assert big["reduce_bucket_size"] == big["allgather_bucket_size"] == 500_000_000
