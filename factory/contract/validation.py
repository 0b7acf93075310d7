"""The validation harness: does a package satisfy its own contract?

It needs no training and no data. It reads the package (refusing unsafe files),
parses the contract and the architecture reference, checks the weights' header and
every tensor against the architecture, compares the contract with the
architecture's signature, runs forward passes on inputs generated from the input
schema at batch size 1 and the contract's maximum, checks every output's name,
dtype and shape, and measures latency against the contract's p99 bound. Every
violation is reported, each naming the field, what was expected and what was found.
The result is a frozen record with a canonical JSON form that a gate can sign.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import factory.contract._files as _files
from factory._untrusted import load_json, preview
from factory._version import code_version
from factory.contract._assemble import build_module, read_architecture, read_contract, read_header
from factory.contract._card import parse_card
from factory.contract._checks import (
    Violation,
    check_outputs,
    check_signature,
    input_bytes,
    make_inputs,
    name_outputs,
    to_tensors,
)
from factory.contract._schema import Contract, canonical_json
from factory.contract.architectures import ArchitectureRegistry, default_registry
from factory.errors import ContractViolationError, CorruptBlobError, InvalidInputError, UnsafePackageError

if TYPE_CHECKING:
    from factory.store import Store

__all__ = ["Check", "LatencyStat", "ValidationResult", "Violation", "validate"]

log = logging.getLogger(__name__)

PREDICATE_TYPE = "https://factory.dev/contract-validation/v1"
# The validator's own memory for one forward pass; a quarter of it may go to the inputs, the
# rest is left to the model's working memory. Checked before any input is allocated.
DEFAULT_MEMORY_BUDGET_MB = 512
_INPUT_SHARE = 4


@dataclass(frozen=True)
class Check:
    """One step of the harness and whether it passed."""

    name: str
    passed: bool | None  # None: skipped, because a step it depends on failed
    detail: str


@dataclass(frozen=True)
class LatencyStat:
    """Forward-pass latency at one batch size, over ``runs`` timed calls after a warm-up."""

    batch_size: int
    threads: int
    runs: int
    p50_ms: float
    p99_ms: float
    max_ms: float


@dataclass(frozen=True)
class ValidationResult:
    """What the harness found; ``ok`` when there are no violations."""

    ok: bool
    package_digest: str | None
    source: str
    contract_digest: str | None
    model_name: str | None
    architecture: str | None
    checks: tuple[Check, ...]
    violations: tuple[Violation, ...]
    latency: tuple[LatencyStat, ...]
    p99_bound_ms: float | None
    duration_s: float
    validator: str
    predicate_type: str = PREDICATE_TYPE

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> bytes:
        """Canonical JSON: the bytes a gate signs."""
        return canonical_json(self.to_dict())


class _Collector:
    def __init__(self) -> None:
        self.checks: list[Check] = []
        self.violations: list[Violation] = []

    def record(self, name: str, violations: list[Violation], detail: str = "") -> bool:
        # A later step may find again what an earlier one named (the same output shape, say): report it once.
        seen = {v.field for v in self.violations}
        fresh = [v for v in violations if v.field not in seen]
        self.violations += fresh
        passed = not violations
        if not passed:
            detail = f"{len(violations)} violation(s): " + ", ".join(v.field for v in violations)
        self.checks.append(Check(name, passed, detail))
        return passed

    def skip(self, name: str, why: str) -> None:
        self.checks.append(Check(name, None, f"skipped: {why}"))


def _time_forward(run: Callable[[], Any], *, runs: int, budget_s: float,
                  timer: Callable[[], float]) -> tuple[int, float, float, float]:
    import numpy as np

    for _ in range(2):
        run()
    times = []
    start = timer()
    while len(times) < runs and (len(times) < 3 or timer() - start < budget_s):
        t0 = timer()
        run()
        times.append((timer() - t0) * 1000.0)
    arr = np.asarray(times)
    return len(times), float(np.percentile(arr, 50)), float(np.percentile(arr, 99)), float(arr.max())


def validate(
    source: str | os.PathLike[str],
    *,
    store: Store | None = None,
    registry: ArchitectureRegistry | None = None,
    allow_code_mismatch: bool = False,
    runs: int = 50,
    budget_s: float = 2.0,
    seed: int = 0,
    timer: Callable[[], float] = time.perf_counter,
    memory_budget_mb: int = DEFAULT_MEMORY_BUDGET_MB,
) -> ValidationResult:
    """Validate the package ``source`` (a model digest or prefix in ``store``, or a package folder).

    Raises only for bad input (no such digest or folder); everything wrong with the
    package itself is a violation in the result. ``runs`` timed calls per batch size
    at most, stopping early once ``budget_s`` is spent (after at least three).
    Forward passes run at batch 1 and the contract's maximum; a maximum whose inputs
    would not fit a quarter of ``memory_budget_mb`` is skipped, and the largest batch
    that fits is run instead. Inputs that would not fit the replica's own
    ``resources.memory_mb`` are a violation.
    """
    import torch  # loaded before the clock starts: the duration is the checks, not the import

    registry = registry or default_registry()
    started = timer()
    c = _Collector()
    contract: Contract | None = None
    arch_label = None
    latency: list[LatencyStat] = []

    def result(digest: str | None, where: str) -> ValidationResult:
        return ValidationResult(
            ok=not c.violations, package_digest=digest, source=where,
            contract_digest=contract.digest if contract else None,
            model_name=contract.name if contract else None, architecture=arch_label,
            checks=tuple(c.checks), violations=tuple(c.violations), latency=tuple(latency),
            p99_bound_ms=contract.resources.p99_latency_ms if contract else None,
            duration_s=round(timer() - started, 4), validator=code_version(),
        )

    try:
        files = _files.open_files(source, store)
    except (UnsafePackageError, ContractViolationError, CorruptBlobError) as exc:
        field = "package.files" if not isinstance(exc, CorruptBlobError) else "package.blobs"
        c.record("files", [Violation(field, "a safe, complete, intact package", type(exc).__name__, str(exc))])
        return result(None, os.fspath(source))
    c.record("files", [], f"{len(files.files)} files, digest {files.digest}")
    data = files.files

    contract, problems = read_contract(data[_files.CONTRACT])
    c.record("contract", problems, f"{contract.name}: {len(contract.inputs)} inputs, "
                                   f"{len(contract.outputs)} outputs" if contract else "")
    ref, arch, problems = read_architecture(data[_files.ARCHITECTURE], registry,
                                            allow_code_mismatch=allow_code_mismatch)
    arch_label = ref.label if ref else None
    c.record("architecture", problems, f"{arch_label}, code {ref.code_digest[:19]}..." if ref else "")
    header, problems = read_header(files.weights)
    c.record("safetensors header", problems,
             f"{len(header.tensors)} tensors, {header.data_bytes} bytes" if header else "")

    module = None
    if arch is not None and header is not None:
        try:
            module, problems = build_module(arch, ref, header, files.weights)
        except CorruptBlobError as exc:
            module, problems = None, [Violation("package.blobs", "intact weights", "CorruptBlobError", str(exc))]
        except ContractViolationError as exc:
            module, problems = None, [Violation("weights", "a well-formed safetensors file", "unreadable", str(exc))]
        c.record("weights vs architecture", problems, "every tensor present with its shape and dtype")
    else:
        c.skip("weights vs architecture", "needs a readable architecture and safetensors header")

    if contract is None or arch is None:
        c.skip("contract vs architecture", "needs a valid contract and architecture")
    else:
        try:
            signature = arch.expected(ref.config)
        except InvalidInputError as exc:
            c.record("contract vs architecture", [Violation(
                "architecture.config", f"a valid config for {arch.label}", preview(ref.config, 200), str(exc))])
        else:
            if signature is None:
                c.skip("contract vs architecture", f"{arch.label} declares no signature")
            else:
                c.record("contract vs architecture", check_signature(contract, signature, arch.label),
                         "inputs and outputs agree with the architecture's signature")

    if module is not None and contract is not None:
        # Measure under the contract's CPU budget, as a replica would run: more intra-op
        # threads than cores also makes small ops wait on each other (milliseconds, not microseconds).
        threads = torch.get_num_threads()
        torch.set_num_threads(max(1, min(int(contract.resources.cpus), os.cpu_count() or 1)))
        try:
            for batch in _batch_sizes(c, contract, memory_budget_mb):
                _forward(c, module, contract, batch, seed, runs, budget_s, timer, latency)
        finally:
            torch.set_num_threads(threads)
    else:
        c.skip("forward pass", "needs a loadable module and a valid contract")

    c.record("model card", _card_violations(data[_files.CARD], data[_files.METRICS]),
             "front matter parses, metrics match metrics.json")
    res = result(files.digest, files.source)
    log.info("validated %s: %s (%d violations)", files.digest, "ok" if res.ok else "FAILED", len(res.violations))
    return res


def _batch_sizes(c: _Collector, contract: Contract, memory_budget_mb: int) -> list[int]:
    """Batch 1 and the contract's maximum, each checked against memory before its inputs exist."""
    largest = contract.resources.max_batch_size
    per_row = input_bytes(contract, 1)
    mib = float(1 << 20)
    need = per_row * largest
    replica = contract.resources.memory_mb << 20
    if need > replica:
        c.record(f"memory, batch {largest}", [Violation(
            "resources.max_batch_size", f"inputs within memory_mb ({contract.resources.memory_mb} MiB)",
            f"{need / mib:,.0f} MiB of inputs at batch {largest}",
            "a replica could not even hold its largest batch: lower max_batch_size or raise memory_mb")])
    allowed = (memory_budget_mb << 20) // _INPUT_SHARE
    if per_row > allowed:
        c.skip("forward pass", f"one row of inputs needs {per_row / mib:,.1f} MiB, over the validator's budget "
                               f"of {allowed / mib:,.0f} MiB for inputs (memory_budget_mb={memory_budget_mb})")
        return []
    sizes = {1}
    if need <= allowed:
        sizes.add(largest)
    else:
        fit = allowed // per_row
        sizes.add(fit)
        c.skip(f"forward pass, batch {largest}",
               f"its inputs need {need / mib:,.0f} MiB, over the validator's budget of {allowed / mib:,.0f} MiB "
               f"for inputs (memory_budget_mb={memory_budget_mb}); validated at batch {fit} instead")
    return sorted(sizes)


def _forward(c: _Collector, module: Any, contract: Contract, batch: int, seed: int, runs: int, budget_s: float,
             timer: Callable[[], float], latency: list[LatencyStat]) -> None:
    import torch

    name = f"forward pass, batch {batch}"
    try:
        tensors = to_tensors(contract, make_inputs(contract, batch, seed))
        with torch.inference_mode():
            outputs = name_outputs(module(*tensors), contract)
    except ContractViolationError as exc:
        c.record(name, [Violation("outputs", "outputs named as the contract declares", "unnamed", str(exc))])
        return
    except Exception as exc:  # the model's own code failing on contract-shaped inputs is the finding
        shapes = ", ".join(f"{t.name} {list(t.shape)}" for t in contract.inputs)
        c.record(name, [Violation("inputs", f"the model runs on inputs shaped {shapes}",
                                  f"{type(exc).__name__}", f"forward pass at batch {batch} failed: {exc}")])
        return
    # Latency is measured even when outputs are wrong: the model ran, so its speed is a finding too.
    c.record(name, check_outputs(contract, outputs, batch), f"{len(outputs)} outputs as declared")

    def run() -> None:
        with torch.inference_mode():
            module(*tensors)

    n, p50, p99, worst = _time_forward(run, runs=runs, budget_s=budget_s, timer=timer)
    latency.append(LatencyStat(batch, torch.get_num_threads(), n, round(p50, 4), round(p99, 4), round(worst, 4)))
    bound = contract.resources.p99_latency_ms
    problems = []
    if p99 > bound:
        problems.append(Violation(f"resources.p99_latency_ms[batch {batch}]", f"p99 <= {bound:g} ms",
                                  f"p99 {p99:.3f} ms over {n} runs",
                                  f"the model is slower than its contract allows at batch size {batch}"))
    c.record(f"latency, batch {batch}", problems, f"p99 {p99:.3f} ms <= {bound:g} ms ({n} runs)")


def _card_violations(card: bytes, metrics_json: bytes) -> list[Violation]:
    try:
        front = parse_card(card)
    except (ContractViolationError, UnicodeDecodeError) as exc:
        return [Violation("card", "YAML front matter", "unreadable", str(exc))]
    try:
        metrics = load_json(metrics_json, what="metrics.json", max_bytes=_files.MAX_TEXT_BYTES, error=ValueError)
        if not isinstance(metrics, dict):
            raise ValueError("metrics.json is not an object")
    except ValueError as exc:
        return [Violation("metrics", "a JSON object of metrics", "unreadable", str(exc))]
    index = front.get("model-index")
    if not isinstance(index, list) or not index or not isinstance(index[0], dict):
        return [Violation("card.model-index", "a model-index list", preview(index), "the card lacks model-index")]
    carded = {}
    results = index[0].get("results")
    for res in results if isinstance(results, list) else []:
        found = res.get("metrics") if isinstance(res, dict) else None
        for m in found if isinstance(found, list) else []:
            if isinstance(m, dict) and isinstance(m.get("type"), str):
                carded[m["type"]] = m.get("value")
    if carded != metrics:
        return [Violation("card.model-index", f"metrics {preview(metrics, 200)}", preview(carded, 200),
                          "the card's model-index metrics differ from metrics.json: re-package the model")]
    return []
