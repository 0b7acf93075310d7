"""The demo's sizes, its pipelines as written, and how its progress reports: no Ray (pipelines run in-process)."""

from __future__ import annotations

import numpy as np

from factory.runtime._demo_data import corrupt_labels, generate
from factory.runtime._demo_phases import Cycle, Labelled, Options, Progress
from factory.serve import RolloutConfig


class Lines(Progress):
    def __init__(self):
        self.lines: list[str] = []

    def note(self, text):
        self.lines.append(text)

    def value(self, label, value):
        self.lines.append(f"{label} = {value}")


def test_smoke_is_the_quick_cycle_with_one_trial_one_step_and_no_faulty_candidate():
    """The submitted-job test's variant still runs a sweep and a rollout, only the cheapest real ones."""
    quick, smoke = Options.quick(), Options.smoke()
    assert smoke.learning_rates == (0.03,) and smoke.steps == (100.0,) and not smoke.faulty
    assert (smoke.customers, smoke.epochs, smoke.window_s) == (quick.customers, quick.epochs, quick.window_s)
    assert Options().faulty and quick.faulty and len(Options().learning_rates) == 2


def test_work_beside_a_phase_reports_labelled_lines_into_the_same_cycle():
    """The faulty candidate's lines say whose they are, and what it makes lands in the one cycle."""
    lines = Lines()
    cycle = Cycle(store=None, options=Options.quick(), progress=lines)
    beside = cycle.beside("faulty candidate")
    beside.progress.note("epoch 1/2")
    beside.progress.value("model", "sha256:ab")
    beside.made["faulty"] = "x"
    with beside.timed("train"):
        pass
    assert lines.lines == ["[faulty candidate] epoch 1/2", "[faulty candidate] model: sha256:ab"]
    assert cycle.made["faulty"] == "x" and "train" in cycle.timings
    assert isinstance(beside.progress, Labelled) and cycle.progress is lines


def test_the_faulty_labels_differ_on_far_more_rows_than_the_rollout_tolerates():
    """The worse candidate is told apart live: its labels flip well above the divergence bound (10 %)."""
    book = generate(4000, 4000, month=1, seed=7)
    activity = book.activity.to_pandas().groupby("customer_id")["utilization"].mean()
    apps = book.applications.to_pandas()
    import pyarrow as pa

    table = pa.table({"utilization": activity.reindex(apps["customer_id"]).to_numpy(np.float32),
                      "defaulted": apps["defaulted"].to_numpy()})
    flipped = np.mean(corrupt_labels(table, above=Options().corrupt_above)["defaulted"].to_numpy()
                      != table["defaulted"].to_numpy())
    assert flipped > 2 * RolloutConfig().max_disagreement


def test_the_demos_pipelines_pass_their_checks_at_load():
    """The candidate, faulty and rollout pipelines the demo submits are valid as written (no step refused)."""
    from factory.runtime._demo_pipelines import candidate_pipeline, faulty_pipeline, rollout_pipeline
    from factory.runtime._step_types import PLACEHOLDER_DIGEST

    cycle = Cycle(store=None, options=Options.quick())
    candidate = candidate_pipeline(cycle).spec()
    assert [s.name for s in candidate.steps] == ["ingest", "features", "tune", "gates", "evaluate", "rollout"]
    assert candidate.step("rollout").config["allow_rollback"] is False
    ingested = {"applications": PLACEHOLDER_DIGEST, "customer-profile": PLACEHOLDER_DIGEST,
                "card-activity": PLACEHOLDER_DIGEST}
    faulty = faulty_pipeline(cycle, ingested, PLACEHOLDER_DIGEST).spec()
    assert faulty.step("features").config["transform"].endswith(":corrupt_labels")
    assert faulty.step("train").config["compute"]["workers"] == cycle.options.faulty_workers
    rollout = rollout_pipeline(cycle, PLACEHOLDER_DIGEST, name="r").spec()
    assert rollout.step("rollout").config["allow_rollback"] is True
    assert rollout.step("rollout").config["rollout"]["steps"] == list(Options.quick().steps)


def test_following_a_pipeline_shows_each_step_as_it_changes_and_its_timings(tmp_path):
    """The demo's progress names every step when it starts and ends, with its time and outputs; a failed
    run stops the demo with the step's error."""
    import pytest

    from factory.errors import PipelineFailedError
    from factory.runtime import Controller, Pipeline, resolve
    from factory.runtime._demo_pipelines import follow
    from factory.settings import Settings
    from factory.store import Store

    store = Store(str(tmp_path / "home"), settings=Settings(home=str(tmp_path / "home")))
    ok = Pipeline("ok")
    a = ok.user("a", "pipeline_kit:make", config={"text": "a", "sleep_s": 0.3})
    ok.user("b", "pipeline_kit:join", inputs={"a": a.output("blob")})
    broken = Pipeline("broken")
    broken.user("bad", "pipeline_kit:fail")
    ctl = Controller(store, loop_s=0.05)
    ctl.start()
    try:
        lines = Lines()
        cycle = Cycle(store=store, options=Options.quick(), progress=lines)
        done = []
        status = follow(cycle, ctl.submit(resolve(store, ok.spec()), "ok"), label="x", poll_s=0.05,
                        on_step=lambda s: done.append(s.name))
        with pytest.raises(PipelineFailedError, match="the step's code is broken"):
            follow(cycle, ctl.submit(resolve(store, broken.spec()), "broken"), label="y", poll_s=0.05)
    finally:
        ctl.stop()
    assert status.succeeded and done == ["a", "b"]
    assert "step a: running" in lines.lines and any(line.startswith("step b: succeeded in ") for line in lines.lines)
    assert {"x: step a", "x: step b"} <= set(cycle.timings) and cycle.rollouts == []
