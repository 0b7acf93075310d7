"""Training checkpoints: a partial or damaged one is never resumed from; the newest whole one is."""

from __future__ import annotations

import json

import pyarrow.fs as pafs
import pytest
import torch
from safetensors.torch import save_file

from factory.train import _checkpoint as ckpt


def _write(folder, step: int, world: int = 2, ranks=None):
    """A checkpoint as the workers write it: rank 0 the weights and state, every rank its own file."""
    folder.mkdir(parents=True, exist_ok=True)
    state = ckpt.TrainState(epoch=step, step=step, world_size=world)
    for rank in ranks if ranks is not None else range(world):
        files = [ckpt.save_rank_state(folder, rank, torch.device("cpu"), loss_sum=0.25 * rank)]
        if rank == 0:
            save_file({"w": torch.full((3,), float(step))}, str(folder / ckpt.MODEL_FILE))
            (folder / ckpt.STATE_FILE).write_bytes(state.to_json())
            files += [ckpt.MODEL_FILE, ckpt.STATE_FILE]
        ckpt.write_manifest(folder, rank, world, files)
    return folder


def test_a_whole_checkpoint_verifies_and_round_trips_its_state(tmp_path):
    """Every rank's share present and intact: it verifies, and its state and rank files read back."""
    folder = _write(tmp_path / ckpt.checkpoint_name(20), 20)
    assert ckpt.verify(folder, 2) is None
    state = ckpt.TrainState.from_json((folder / ckpt.STATE_FILE).read_bytes())
    assert (state.epoch, state.step, state.world_size) == (20, 20, 2)
    assert ckpt.load_rank_state(folder, 1, torch.device("cpu")) == 0.25


def test_damaged_or_partial_checkpoints_do_not_verify(tmp_path):
    """A flipped byte, a missing rank, a missing file or another world size each fail, saying why."""
    flipped = _write(tmp_path / "a", 1)
    data = bytearray((flipped / ckpt.MODEL_FILE).read_bytes())
    data[-1] ^= 0xFF
    (flipped / ckpt.MODEL_FILE).write_bytes(bytes(data))
    assert "model.safetensors (rank 0) does not match its digest" in ckpt.verify(flipped, 2)

    assert "rank(s) [1] never finished" in ckpt.verify(_write(tmp_path / "b", 1, ranks=[0]), 2)
    missing = _write(tmp_path / "c", 1)
    (missing / "rank1.safetensors").unlink()
    assert "rank1.safetensors (rank 1) is missing" in ckpt.verify(missing, 2)
    assert "written by 2 workers; this job has 4" in ckpt.verify(_write(tmp_path / "d", 1), 4)
    (tmp_path / "e").mkdir()
    assert "never finished" in ckpt.verify(tmp_path / "e", 2)


def test_siblings_list_every_checkpoint_newest_first(tmp_path):
    """Beside Ray's latest checkpoint, older ones are found in step order, other folders ignored."""
    for step in (5, 15, 10):
        _write(tmp_path / ckpt.checkpoint_name(step), step)
    (tmp_path / "checkpoint_manager_snapshot").mkdir()
    found = ckpt.siblings(str(tmp_path / ckpt.checkpoint_name(15)), pafs.LocalFileSystem())
    assert [c.step for c in found] == [15, 10, 5]
    local = ckpt.materialize(found[0], tmp_path)
    assert ckpt.verify(local, 2) is None


def test_optimizer_state_survives_without_pickle():
    """An Adam state flattened to tensors plus JSON loads back into a fresh optimizer exactly."""
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.ones(4, 3)).sum().backward()
    opt.step()
    tensors, meta = ckpt.flatten_optimizer(opt.state_dict())
    json.dumps(meta)
    fresh = torch.optim.Adam(model.parameters(), lr=0.5)
    fresh.load_state_dict(ckpt.unflatten_optimizer(tensors, json.loads(json.dumps(meta))))
    for a, b in zip(opt.state_dict()["state"].values(), fresh.state_dict()["state"].values()):
        for name in a:
            assert torch.equal(a[name], b[name])
    assert fresh.param_groups[0]["lr"] == 0.1


@pytest.mark.parametrize("name,step", [("checkpoint-000000042", 42), ("/x/checkpoint-000000007/", 7), ("other", None)])
def test_step_of_reads_the_folder_name(name, step):
    """Checkpoint folders are named by their global step."""
    assert ckpt.step_of(name) == step


def test_newest_good_passes_over_a_damaged_newest_checkpoint(tmp_path):
    """Of a run's checkpoints, the newest that verifies is picked; none verifying gives None."""
    for step in (10, 20):
        _write(tmp_path / ckpt.checkpoint_name(step), step)
    (tmp_path / ckpt.checkpoint_name(20) / "rank1.safetensors").write_bytes(b"tampered")
    with ckpt.newest_good(str(tmp_path), 2) as found:
        assert found is not None and ckpt.step_of(found[1]) == 10
    (tmp_path / ckpt.checkpoint_name(10) / ckpt.STATE_FILE).write_bytes(b"{}")
    with ckpt.newest_good(str(tmp_path), 2) as found:
        assert found is None


def test_a_stored_checkpoint_whose_files_do_not_match_gives_way_to_the_one_before(store, tmp_path):
    """A resumed run's newest checkpoint tree has a flipped byte in the store: the worker passes over it
    for the previous one, which it fetches whole and verified."""
    from factory.train._loop import _fetch

    trees = {step: store.trees.put(_write(tmp_path / ckpt.checkpoint_name(step), step)).digest for step in (10, 20)}
    newest = store.trees.manifest(trees[20]).files[ckpt.MODEL_FILE].digest
    blob = store.blobs.path(newest)
    damaged = bytearray(open(blob, "rb").read())
    damaged[len(damaged) // 2] ^= 0xFF
    with open(blob, "wb") as f:
        f.write(bytes(damaged))

    stored = ckpt.StoredCheckpoints(store.home, store.settings, ((20, trees[20]), (10, trees[10])))
    first, second = ckpt.order_candidates(stored.candidates())
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    local, problem = _fetch(first, str(scratch), 2)
    assert local is None and "cannot be read" in problem
    local, problem = _fetch(second, str(scratch), 2)
    assert problem is None and ckpt.TrainState.from_json((local / ckpt.STATE_FILE).read_bytes()).step == 10


def test_ray_storage_is_tried_before_the_store_copy_of_the_same_step(tmp_path):
    """Of two copies of one step, Ray's folder comes first and the store's tree stays as the fallback."""
    stored = ckpt.StoredCheckpoints("/home", None, ((20, "sha256:" + "a" * 64),))
    ray_copy = ckpt.Candidate(str(tmp_path / ckpt.checkpoint_name(20)), 20)
    older = ckpt.Candidate(str(tmp_path / ckpt.checkpoint_name(10)), 10)
    ordered = ckpt.order_candidates([*stored.candidates(), older, ray_copy])
    assert [(c.step, c.store is not None) for c in ordered] == [(20, False), (20, True), (10, False)]
