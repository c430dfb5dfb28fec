"""Checkpoints: never half-written, never unpickled, and a mismatch named by its key."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn

from ibrar.checkpoint import CheckpointError, find_checkpoint, load_file, load_state, save_atomic


class _Marker:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_a_write_leaves_only_the_file_and_its_digest(tmp_path):
    save_atomic({"w": torch.ones(3)}, tmp_path / "checkpoint.pt")
    save_atomic({"w": torch.zeros(3)}, tmp_path / "checkpoint.pt")  # over the previous one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "checkpoint.pt.sha256"]
    assert torch.equal(load_file(tmp_path / "checkpoint.pt")["w"], torch.zeros(3))


def test_a_pickled_object_is_refused_and_never_run(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"model": _Marker()}, f)
    with pytest.raises(CheckpointError, match="refused"):
        load_file(path)
    assert "must never run" not in capsys.readouterr().out


def test_a_shape_mismatch_names_the_parameter_and_both_shapes(tmp_path):
    with pytest.raises(CheckpointError, match=r"weight: checkpoint \(3, 4\) vs model \(2, 4\)"):
        load_state(nn.Linear(4, 2), nn.Linear(4, 3).state_dict(), "model", tmp_path / "final.pt")


def test_a_run_folder_gives_its_final_weights_before_its_latest_checkpoint(tmp_path):
    save_atomic({"w": torch.ones(1)}, tmp_path / "checkpoint.pt")
    assert find_checkpoint(tmp_path) == tmp_path / "checkpoint.pt"
    save_atomic({"w": torch.ones(1)}, tmp_path / "final.pt")
    assert find_checkpoint(tmp_path) == tmp_path / "final.pt"
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no final.pt"):
        find_checkpoint(tmp_path / "empty")
