"""The contract schema: validation, canonical JSON, and its mapping onto OIP model metadata."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from factory.contract import (
    Contract,
    DType,
    FeatureRef,
    InputSpec,
    Interval,
    Observability,
    OutputSpec,
    Provenance,
    Resources,
)

DIGEST = "sha256:" + "ab" * 32
# The tensor datatypes of the Open Inference Protocol (KServe V2), as the spec lists them.
OIP_DATATYPES = {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
                 "FP16", "FP32", "FP64", "BYTES"}


def make_contract(**overrides) -> Contract:
    fields = dict(
        name="fraud",
        inputs=(
            InputSpec(name="amount", dtype=DType.FP32, shape=(-1,), feature_view=FeatureRef(name="tx", digest=DIGEST)),
            InputSpec(name="country", dtype=DType.INT64, shape=(-1,), nullable=True),
        ),
        outputs=(
            OutputSpec(name="score", dtype=DType.FP32, shape=(-1,), interval=Interval(lower="lo", upper="hi")),
            OutputSpec(name="lo", dtype=DType.FP32, shape=(-1,)),
            OutputSpec(name="hi", dtype=DType.FP32, shape=(-1,)),
        ),
        resources=Resources(p99_latency_ms=20, max_batch_size=32, batch_wait_ms=2),
        observability=Observability(sample_rate=0.5, drift_features=("amount",)),
        provenance=Provenance(dataset=DIGEST),
    )
    fields.update(overrides)
    return Contract(**fields)


def test_json_round_trip_keeps_every_field_and_the_digest():
    """A contract written as JSON reads back equal, with the same digest."""
    contract = make_contract()
    again = Contract.from_json(contract.to_json())
    assert again == contract
    assert again.digest == contract.digest
    assert json.loads(contract.to_json())["schema_version"] == "factory.contract/v1"


def test_digest_changes_with_any_field():
    """Two contracts that differ in one bound have different digests."""
    assert make_contract().digest != make_contract(resources=Resources(p99_latency_ms=21)).digest


def test_contract_is_frozen_and_rejects_unknown_fields():
    """A contract cannot be changed in place, and a misspelt field is an error, not ignored."""
    contract = make_contract()
    with pytest.raises(ValidationError):
        contract.name = "other"
    data = json.loads(contract.to_json())
    data["resources"]["p99_latency"] = 5
    with pytest.raises(ValidationError, match="p99_latency"):
        Contract.model_validate(data)


@pytest.mark.parametrize(
    ("shape", "hint"),
    [((4,), "must start with -1"), ((), "at least the batch dimension"), ((-1, 0), "positive size")],
)
def test_bad_shapes_say_how_to_fix_them(shape, hint):
    """Shapes must lead with the batch dimension (-1) and hold positive sizes; the error says so."""
    with pytest.raises(ValidationError, match=hint):
        InputSpec(name="x", dtype="FP32", shape=shape)


def test_cross_field_checks():
    """Duplicate names, drift on a non-input, an interval from a missing output and a wait over the bound fail."""
    x = InputSpec(name="x", dtype="FP32", shape=(-1, 2))
    y = OutputSpec(name="y", dtype="FP32", shape=(-1,))
    with pytest.raises(ValidationError, match="appears twice"):
        Contract(name="m", inputs=(x, x), outputs=(y,))
    with pytest.raises(ValidationError, match="not an input"):
        Contract(name="m", inputs=(x,), outputs=(y,), observability=Observability(drift_features=("z",)))
    with pytest.raises(ValidationError, match="not another output"):
        Contract(name="m", inputs=(x,), outputs=(OutputSpec(name="y", dtype="FP32", shape=(-1,),
                                                            interval=Interval(lower="y", upper="q")),))
    with pytest.raises(ValidationError, match="batch_wait_ms"):
        Resources(p99_latency_ms=5, batch_wait_ms=5)


def test_provenance_takes_only_digests():
    """A provenance entry that is not a sha256 digest is refused."""
    with pytest.raises(ValidationError, match="not a digest"):
        Provenance(dataset="iris-v1")


def test_oip_metadata_is_the_v2_model_metadata_response():
    """oip_metadata() is exactly the body of GET /v2/models/{name}: name, versions, platform, tensors."""
    meta = make_contract().oip_metadata(versions=["3"])
    assert meta["name"] == "fraud"
    assert meta["versions"] == ["3"]
    assert meta["inputs"] == [
        {"name": "amount", "datatype": "FP32", "shape": [-1]},
        {"name": "country", "datatype": "INT64", "shape": [-1]},
    ]
    assert [o["name"] for o in meta["outputs"]] == ["score", "lo", "hi"]
    assert set(meta) == {"name", "versions", "platform", "inputs", "outputs"}


def test_dtypes_are_exactly_the_oip_datatypes():
    """Every contract dtype is an OIP datatype under its OIP name, and every OIP datatype is available."""
    assert {str(d) for d in DType} == OIP_DATATYPES


_shapes = st.lists(st.one_of(st.just(-1), st.integers(1, 64)), max_size=3).map(lambda dims: (-1, *dims))
_specs = st.tuples(st.sampled_from(sorted(OIP_DATATYPES)), _shapes)


@given(inputs=st.lists(_specs, min_size=1, max_size=4), outputs=st.lists(_specs, min_size=1, max_size=3))
def test_every_tensor_maps_one_to_one_onto_oip(inputs, outputs):
    """Any valid contract's tensors go to OIP metadata and come back as equal specs, in order."""
    contract = Contract(
        name="m",
        inputs=tuple(InputSpec(name=f"i{n}", dtype=d, shape=s) for n, (d, s) in enumerate(inputs)),
        outputs=tuple(OutputSpec(name=f"o{n}", dtype=d, shape=s) for n, (d, s) in enumerate(outputs)),
    )
    meta = contract.oip_metadata()
    assert tuple(InputSpec.from_oip(m) for m in meta["inputs"]) == contract.inputs
    assert tuple(OutputSpec.from_oip(m) for m in meta["outputs"]) == contract.outputs
    assert Contract.from_json(contract.to_json()) == contract


def test_importing_the_contract_does_not_import_torch():
    """The schema (and so the CLI's help) loads without torch."""
    code = "import sys, factory.contract; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_lookup_by_name():
    """Inputs and outputs are found by name; an unknown name lists the real ones."""
    from factory.errors import NotFoundError

    contract = make_contract()
    assert contract.input("country").nullable
    assert contract.output("score").interval.level == 0.95
    with pytest.raises(NotFoundError, match=r"\['amount', 'country'\]"):
        contract.input("age")
