"""The one request check: names, strict datatypes, shapes and batch bounds, nulls, body size, binary tensors."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from factory.contract import (
    Contract,
    DType,
    InputSpec,
    OutputSpec,
    Resources,
    check_request,
    default_registry,
    load,
    package,
    parse_request,
)
from factory.contract._checks import to_tensors
from factory.errors import ContractViolationError, InvalidRequestError

CONTRACT = Contract(
    name="fraud",
    inputs=(
        InputSpec(name="amount", dtype=DType.FP32, shape=(-1, 2)),
        InputSpec(name="country", dtype=DType.INT64, shape=(-1,), nullable=True),
        InputSpec(name="flag", dtype=DType.BOOL, shape=(-1,)),
        InputSpec(name="note", dtype=DType.BYTES, shape=(-1,)),
        InputSpec(name="income", dtype=DType.FP64, shape=(-1,), nullable=True),
    ),
    outputs=(OutputSpec(name="score", dtype=DType.FP32, shape=(-1,)),),
    resources=Resources(max_batch_size=4),
)


def body(**changes) -> dict:
    tensors = {
        "amount": {"name": "amount", "datatype": "FP32", "shape": [2, 2], "data": [1.5, 2, 3.0, 4]},
        "country": {"name": "country", "datatype": "INT64", "shape": [2], "data": [7, 9]},
        "flag": {"name": "flag", "datatype": "BOOL", "shape": [2], "data": [True, False]},
        "note": {"name": "note", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]},
        "income": {"name": "income", "datatype": "FP64", "shape": [2], "data": [1.0, 2.0]},
    }
    for name, change in changes.items():
        if change is None:
            del tensors[name]
        else:
            tensors[name] = {**tensors[name], **change}
    return {"id": "req-1", "inputs": list(tensors.values())}


def refused(request, *, match: str, input: str | None = "any", status: int = 400, **kwargs) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError, match=match) as info:
        check_request(CONTRACT, request, **kwargs)
    if input != "any":
        assert info.value.input == input
    assert info.value.status == status
    return info.value


def test_a_good_request_gives_arrays_of_the_contract_dtypes_and_shapes():
    """A well-formed request comes back as arrays the model can take, in contract order."""
    inputs = check_request(CONTRACT, json.dumps(body()).encode())
    assert list(inputs) == ["amount", "country", "flag", "note", "income"]
    assert inputs["amount"].dtype == np.float32 and inputs["amount"].shape == (2, 2)
    assert inputs["amount"].tolist() == [[1.5, 2.0], [3.0, 4.0]]
    assert inputs["country"].dtype == np.int64 and inputs["flag"].dtype == np.bool_
    assert inputs["note"].tolist() == [b"a", b"b"]


def test_parse_keeps_the_id_rows_and_requested_outputs():
    """A server gets the client's id, the batch size and which outputs were asked for."""
    request = parse_request(CONTRACT, {**body(), "outputs": [{"name": "score", "parameters": {"binary_data": True}}]})
    assert request.id == "req-1" and request.rows == 2
    assert [(o.name, o.binary) for o in request.outputs] == [("score", True)]


def test_nested_data_is_read_row_major_like_flat_data():
    """Plain JSON clients may nest values by dimension; the result equals the flat form."""
    inputs = check_request(CONTRACT, body(amount={"data": [[1.5, 2], [3.0, 4]]}))
    assert inputs["amount"].tolist() == [[1.5, 2.0], [3.0, 4.0]]


@pytest.mark.parametrize(("changes", "match", "input"), [
    ({"country": {"data": [7, 9.5]}}, r"input 'country' is INT64, but the request holds a fraction \(9.5\)", "country"),
    ({"country": {"data": [7, 1.0]}}, r"INT64, but the request holds a fraction", "country"),
    ({"country": {"data": [True, 1]}}, r"INT64, but the request holds a boolean", "country"),
    ({"amount": {"data": [1, "2", 3, 4]}}, r"FP32, but the request holds a string \(\"2\"\)", "amount"),
    ({"amount": {"data": [1, True, 3, 4]}}, "holds a boolean", "amount"),
    ({"flag": {"data": [1, 0]}}, r"BOOL, but the request holds a whole number.*send true or false", "flag"),
    ({"note": {"data": [1, 2]}}, "BYTES, but the request holds a whole number", "note"),
    ({"amount": {"datatype": "FP64"}}, r"'amount' is FP32 in the contract, but the request says 'FP64'", "amount"),
    ({"amount": {"shape": [2, 3], "data": [0] * 6}}, r"shape \[2, 3\]; the contract wants \[-1, 2\]", "amount"),
    ({"amount": {"shape": [4], "data": [0] * 4}}, r"shape \[4\]; the contract wants", "amount"),
    ({"amount": {"data": [1, 2, 3]}}, "has 3 values for shape \\[2, 2\\], which holds 4", "amount"),
    ({"amount": {"data": [[1, 2], [3]]}}, "nested 'data' does not match shape", "amount"),
    ({"amount": {"shape": "2,2"}}, "needs 'shape', a list", "amount"),
    ({"amount": {"shape": [2, -2]}}, "needs 'shape', a list of non-negative", "amount"),
    ({"amount": {"data": None}}, "needs 'data', a list", "amount"),
    ({"flag": {"shape": [3], "data": [True] * 3}}, "has 3 rows but another input has 2", "flag"),
    ({"country": {"data": [2**63, 1]}}, r"INT64, whose values run from .* the request holds 9223372036854775808",
     "country"),
    ({"flag": None}, r"missing input 'flag' \(BOOL \[-1\]\)", "flag"),
    ({"amount": {"data": [1, None, 3, 4]}}, "holds a null at position 1, but it is not nullable", "amount"),
])
def test_each_bad_input_is_refused_naming_the_problem_and_the_input(changes, match, input):
    """A wrong datatype, shape, count or null is a 400 that says what is wrong with which input."""
    refused(body(**changes), match=match, input=input)


def test_rows_over_the_batch_bound_are_refused():
    """A request with more rows than max_batch_size is refused and told to split."""
    changes = {"amount": {"shape": [5, 2], "data": [0.0] * 10}}
    for name in ("country", "flag", "note", "income"):
        changes[name] = {"shape": [5], "data": [{"country": 1, "flag": True, "note": "x", "income": 1.0}[name]] * 5}
    refused(body(**changes), match=r"has 5 rows; the model takes 1 to 4 .*max_batch_size.*split", input="amount")


def test_unknown_duplicate_and_missing_names_are_refused():
    """Input names must be exactly the contract's."""
    good = body()
    refused({"inputs": [*good["inputs"], {"name": "zip", "datatype": "INT64", "shape": [2], "data": [1, 2]}]},
            match=r"unknown input 'zip': model 'fraud' takes \['amount'", input="zip")
    refused({"inputs": [*good["inputs"], good["inputs"][0]]}, match="input 'amount' is given twice", input="amount")
    refused({**good, "outputs": [{"name": "nope"}]}, match=r"unknown output 'nope': model 'fraud' returns \['score'\]")


@pytest.mark.parametrize(("raw", "match"), [
    (b"{not json", "not valid JSON at line 1 column 2"),
    (b'{"id": "\xff"}', "not UTF-8 JSON"),
    (b"[1, 2]", "is a list, not a JSON object"),
    (b'{"inputs": []}', "needs 'inputs', a list with one entry per input"),
    (b'{"inputs": [3]}', r"inputs\[0\] is a whole number"),
    (b'{"inputs": [{"shape": [1]}]}', r"inputs\[0\] has no 'name'"),
    (b'{"id": 5, "inputs": []}', "'id' must be a string"),
    (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
])
def test_malformed_bodies_are_refused(raw, match):
    """Bodies that are not an OIP request get a 400 that says what the request should look like."""
    refused(raw, match=match, input=None)


def test_nulls_become_nan_or_masked_only_where_nullable():
    """A null reaches a nullable float input as NaN and a nullable integer input as a masked value."""
    inputs = check_request(CONTRACT, body(country={"data": [None, 3]}, income={"data": [None, 2.5]}))
    assert np.isnan(inputs["income"][0]) and inputs["income"][1] == 2.5
    assert isinstance(inputs["country"], np.ma.MaskedArray)
    assert inputs["country"].mask.tolist() == [True, False] and inputs["country"][1] == 3


def test_a_body_over_the_limit_is_413():
    """A body larger than the serving limit is refused before it is parsed."""
    raw = json.dumps(body()).encode()
    refused(raw, match=f"the request body is {len(raw)} bytes, over the limit of 100", status=413, input=None,
            max_body_bytes=100)


def binary_body(arrays: dict[str, np.ndarray], contract: Contract = CONTRACT) -> tuple[bytes, int]:
    """Encode like tritonclient.http: JSON header, then each input's raw bytes."""
    header = {"inputs": []}
    chunks = []
    for name, array in arrays.items():
        dtype = contract.input(name).dtype
        if dtype is DType.BYTES:
            raw = b"".join(len(v).to_bytes(4, "little") + v for v in array.ravel())
        else:
            raw = np.ascontiguousarray(array).tobytes()
        header["inputs"].append({"name": name, "datatype": str(dtype), "shape": list(array.shape),
                                 "parameters": {"binary_data_size": len(raw)}})
        chunks.append(raw)
    text = json.dumps(header).encode()
    return text + b"".join(chunks), len(text)


ARRAYS = {
    "amount": np.array([[1.5, 2], [3, 4]], dtype=np.float32),
    "country": np.array([7, 9], dtype=np.int64),
    "flag": np.array([True, False]),
    "note": np.array([b"a", b"bc"], dtype=object),
    "income": np.array([1.0, 2.0]),
}


def test_binary_tensors_read_back_exactly():
    """The binary tensor extension (tritonclient's default) gives the same arrays it was sent."""
    raw, length = binary_body(ARRAYS)
    inputs = check_request(CONTRACT, raw, header_length=length)
    for name, array in ARRAYS.items():
        assert inputs[name].tolist() == array.tolist()
        assert inputs[name].flags.writeable or inputs[name].dtype == object


def test_binary_sizes_that_do_not_add_up_are_refused():
    """A binary section shorter or longer than declared, or a wrong header length, is a 400."""
    raw, length = binary_body(ARRAYS)
    refused(raw[:-3], match="declares .* binary bytes, but the body holds only", header_length=length)
    refused(raw + b"xx", match="2 bytes after the JSON header that no input claims", header_length=length)
    refused(raw, match="Inference-Header-Content-Length is 0", header_length=0)
    wrong = dict(ARRAYS, amount=np.zeros((2, 2), dtype=np.float64))
    raw, length = binary_body(wrong)
    refused(raw.replace(b'"FP64"', b'"FP32"', 1), match="sends 32 binary bytes; shape \\[2, 2\\] of FP32 takes 16",
            header_length=length, input="amount")
    raw, length = binary_body(dict(ARRAYS, flag=np.array([2, 1], dtype=np.uint8)))
    refused(raw, match="BOOL: its binary bytes must be 0 or 1", header_length=length, input="flag")


def test_nan_in_a_non_nullable_float_input_is_a_null():
    """NaN is how floats carry a null, so a non-nullable input refuses it."""
    raw, length = binary_body(dict(ARRAYS, amount=np.array([[1, np.nan], [3, 4]], dtype=np.float32)))
    refused(raw, match="'amount' holds NaN at position 1", header_length=length, input="amount")


def test_request_errors_pickle():
    """Errors cross Ray processes intact, input and status included."""
    error = refused(body(flag=None), match="missing")
    again = pickle.loads(pickle.dumps(error))
    assert (str(again), again.input, again.status) == (str(error), "flag", 400)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(tensor=st.dictionaries(st.sampled_from(["name", "datatype", "shape", "data", "parameters"]), JSON_VALUES),
       index=st.integers(0, 4))
def test_any_json_in_place_of_an_input_is_accepted_or_refused_cleanly(tensor, index):
    """Whatever a client puts in an input entry, the check answers with arrays or an InvalidRequestError."""
    request = body()
    request["inputs"][index] = {**request["inputs"][index], **tensor}
    try:
        check_request(CONTRACT, json.dumps(request))
    except InvalidRequestError as exc:
        assert str(exc)


# -- to_tensors, the in-process path ------------------------------------------------------
CONFIG = {"in_features": 2, "out_features": 2, "hidden": [4]}


def mlp_contract(**input_changes) -> Contract:
    sig = default_registry().get("mlp-classifier").expected(CONFIG)
    spec = sig.inputs[0].model_copy(update=input_changes)
    return Contract(name="m", inputs=(spec,), outputs=sig.outputs)


def test_a_none_in_an_input_is_a_contract_violation_not_a_type_error(store):
    """predict() with a None names the input and says it is not nullable, instead of a TypeError."""
    model = default_registry().build("mlp-classifier", CONFIG, seed=0).eval()
    loaded = load(store, package(store, model, mlp_contract()).digest)
    with pytest.raises(ContractViolationError, match="input 'features' holds a null .* not nullable"):
        loaded.predict({"features": [[1.0, None]]})
    with pytest.raises(ContractViolationError, match="input 'features' holds strings"):
        loaded.predict({"features": [["1.0", 2.0]]})


def test_a_none_in_a_nullable_float_input_becomes_nan():
    """A nullable float input passes None to the model as NaN."""
    (tensor,) = to_tensors(mlp_contract(nullable=True), {"features": [[1.0, None]]})
    assert tensor.shape == (1, 2) and bool(tensor[0, 1].isnan())
