"""When things go wrong: hostile or damaged checkpoints, killed runs, NaN losses, busy folders."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import tiny_config
from ibrar.checkpoint import CheckpointError, load_file, load_state
from ibrar.cli import main
from ibrar.config import build_config
from ibrar.loading import load_trained
from ibrar.models import create_model
from ibrar.train import NonFiniteLossError, Trainer, train

SRC = Path(__file__).resolve().parents[1] / "src"


class TouchOnUnpickle:
    """An object whose unpickling creates `marker`: proof that a loader executed pickled code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def same_final_weights(a: Path, b: Path) -> bool:
    state_a, state_b = load_file(a / "final.pt"), load_file(b / "final.pt")
    for part in ("model", "mask"):
        if (state_a[part] is None) != (state_b[part] is None):
            return False
        for key, tensor in (state_a[part] or {}).items():
            if not torch.equal(tensor, state_b[part][key]):
                return False
    return True


def write_config(path: Path, data_root: Path, **sections) -> Path:
    path.write_text(yaml.safe_dump(tiny_config(data_root, **sections)))
    return path


def ibrar_process(*args: str) -> subprocess.Popen:
    # CPU results are bit-identical only for the same thread count: match this process's.
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": str(torch.get_num_threads())}
    return subprocess.Popen([sys.executable, "-m", "ibrar", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def wait_for(condition, proc: subprocess.Popen, timeout: float = 300.0) -> bool:
    """Poll until `condition()` holds; False when the process ended first. The timeout only guards against a
    hang: a shared 2-core machine can take minutes to start a process and train an epoch."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return condition()
        time.sleep(0.01)
    proc.kill()
    raise AssertionError("timed out waiting for the training process")


def metrics_lines(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.is_file() else 0


# ---- safe loading ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(image_folder, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "finished"
    config = build_config(tiny_config(image_folder, ib={"enabled": True}, mask={"enabled": True},
                                      train={"epochs": 1, "eval_pgd_steps": 0, "info_plane_every": 0}))
    train(config, run_dir, quiet=True)
    return run_dir


@pytest.fixture
def hostile_checkpoint(finished_run, tmp_path) -> tuple[Path, Path]:
    """A checkpoint shaped like ours whose unpickling would create a marker file."""
    marker = tmp_path / "code-was-executed"
    state = torch.load(finished_run / "final.pt", weights_only=True)
    state["model"]["payload"] = TouchOnUnpickle(marker)
    path = tmp_path / "hostile.pt"
    torch.save(state, path)
    return path, marker


def test_load_file_refuses_pickled_objects_without_running_them(hostile_checkpoint):
    path, marker = hostile_checkpoint
    with pytest.raises(CheckpointError, match="refused.*pickled Python objects") as err:
        load_file(path)
    assert "Unsupported global" in str(err.value)  # the detail says what was refused
    assert not marker.exists()


def test_load_trained_refuses_pickled_objects(hostile_checkpoint):
    path, marker = hostile_checkpoint
    with pytest.raises(CheckpointError, match="pickled"):
        load_trained(path)
    assert not marker.exists()


def test_cli_eval_refuses_pickled_objects_with_exit_code_2(hostile_checkpoint, image_folder, capsys):
    path, marker = hostile_checkpoint
    assert main(["eval", str(path), "--data-root", str(image_folder), "--attacks", "fgsm", "--n", "4"]) == 2
    err = capsys.readouterr().err
    assert "pickled Python objects" in err and "Traceback" not in err
    assert not marker.exists()


def test_a_plain_pickle_file_is_refused_without_running_it(tmp_path):
    import pickle

    marker = tmp_path / "code-was-executed"
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"model": TouchOnUnpickle(marker)}, protocol=4))
    with pytest.raises(CheckpointError, match="refused"):
        load_file(path)
    assert not marker.exists()


def test_checkpoint_of_another_number_of_classes_names_the_shape_mismatch(finished_run, tmp_path):
    state = load_file(finished_run / "final.pt")
    model = create_model("small_cnn", num_classes=10, width=0.5)
    with pytest.raises(CheckpointError, match=r"shape mismatches.*\(4,.*\(10,.*number of classes"):
        load_state(model, state["model"], "model", "final.pt")
    state["num_classes"] = 7  # the file's own config/metadata disagree with its weights
    torch.save(state, tmp_path / "lying.pt")
    with pytest.raises(CheckpointError, match="does not match"):
        load_trained(tmp_path / "lying.pt")


def test_checkpoint_of_another_architecture_names_the_missing_and_unexpected_keys(finished_run, tmp_path):
    state = load_file(finished_run / "final.pt")
    with pytest.raises(CheckpointError, match="missing keys.*unexpected keys"):
        load_state(create_model("resnet18", num_classes=4, width=0.25), state["model"], "model", "final.pt")
    state["config"]["model"]["width"] = 1.0
    torch.save(state, tmp_path / "wider.pt")
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_trained(tmp_path / "wider.pt")


def test_a_state_that_is_not_tensors_is_a_checkpoint_error(finished_run, tmp_path):
    state = load_file(finished_run / "final.pt")
    state["model"] = [1, 2, 3]
    torch.save(state, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match="not a mapping of parameter names to tensors"):
        load_trained(tmp_path / "odd.pt")


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage", "flipped"])
def test_damaged_checkpoint_is_a_clear_error(damage, finished_run, tmp_path, capsys):
    good = (finished_run / "final.pt").read_bytes()
    bad = {"truncated": good[: len(good) // 2], "empty": b"", "garbage": os.urandom(4096),
           "flipped": good[:40] + bytes(b ^ 0xFF for b in good[40:400]) + good[400:]}[damage]
    path = tmp_path / "final.pt"
    path.write_bytes(bad)
    with pytest.raises(CheckpointError, match="corrupt|refused"):
        load_file(path)
    assert main(["eval", str(tmp_path), "--attacks", "fgsm", "--n", "4"]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_resume_with_a_checkpoint_of_another_width_is_refused(image_folder, finished_run, tmp_path, capsys):
    config = build_config(tiny_config(image_folder, model={"width": 0.25},
                                      train={"epochs": 2, "eval_pgd_steps": 0, "info_plane_every": 0}))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json")))
    (run_dir / "checkpoint.pt").write_bytes((finished_run / "checkpoint.pt").read_bytes())
    assert main(["train", "--resume", str(run_dir), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "does not match" in err and "width" in err


# ---- crash recovery ----------------------------------------------------------------------------------

CRASH_SECTIONS = {
    "data": {"batch_size": 16},
    "train": {"epochs": 4, "eval_pgd_steps": 0, "info_plane_every": 4},
    "ib": {"enabled": True},
    "mask": {"enabled": True, "refresh_every": 3},
}


@pytest.fixture(scope="module")
def uninterrupted(image_folder, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("uninterrupted")
    config_path = write_config(folder / "config.yaml", image_folder, **CRASH_SECTIONS)
    assert main(["train", str(config_path), "--out", str(folder / "run"), "--quiet"]) == 0
    return folder / "run"


@pytest.mark.slow
def test_sigkill_at_several_moments_then_resume_is_bit_identical(image_folder, uninterrupted, tmp_path):
    config_path = write_config(tmp_path / "config.yaml", image_folder, **CRASH_SECTIONS)
    run_dir = tmp_path / "run"
    moments = [  # each is given the number of finished epochs when its process started
        ("soon after start", lambda done: (run_dir / "config.yaml").is_file()),
        ("after the first checkpoint", lambda done: (run_dir / "checkpoint.pt").is_file()),
        ("in the epoch after one this process finished", lambda done: metrics_lines(run_dir) > done),
    ]
    args = ["train", str(config_path), "--out", str(run_dir), "--quiet"]
    killed = 0
    for what, moment in moments:
        done = metrics_lines(run_dir)
        proc = ibrar_process(*args)
        if wait_for(lambda moment=moment, done=done: moment(done), proc) and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.communicate(timeout=60)
        assert proc.returncode in (0, -signal.SIGKILL), (what, proc.returncode)
        args = ["train", "--resume", str(run_dir), "--quiet"]
    assert killed >= 2, "the run finished before it could be killed"
    assert main(args) == 0
    assert same_final_weights(uninterrupted, run_dir)
    epochs = [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3, 4]


@pytest.mark.slow
def test_sigterm_stops_with_a_usable_checkpoint_and_resume_is_bit_identical(image_folder, uninterrupted,
                                                                            tmp_path):
    config_path = write_config(tmp_path / "config.yaml", image_folder, **CRASH_SECTIONS)
    run_dir = tmp_path / "run"
    proc = ibrar_process("train", str(config_path), "--out", str(run_dir), "--quiet")
    assert wait_for(lambda: (run_dir / "checkpoint.pt").is_file(), proc)
    assert proc.poll() is None, "the run finished before it could be stopped"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "--resume" in err and "Traceback" not in err
    assert not (run_dir / "final.pt").exists()
    assert load_file(run_dir / "checkpoint.pt")["epoch"] >= 1
    assert main(["train", "--resume", str(run_dir), "--quiet"]) == 0
    assert same_final_weights(uninterrupted, run_dir)


@pytest.mark.parametrize("stop", [9, 11])  # the third and the fifth batch of epoch 2 (6 batches per epoch)
def test_preemption_mid_epoch_checkpoints_that_batch_and_resumes_bit_identical(image_folder, tmp_path,
                                                                                 monkeypatch, stop):
    """Weights and both logs as the uninterrupted run's, the epoch's largest gradient norm included (it may lie
    before the stop)."""
    sections = {"method": {"name": "pgd_at", "steps": 1}, "ib": {"enabled": True},
                "mask": {"enabled": True, "drop_fraction": 0.25, "refresh_every": 2},
                "train": {"epochs": 2, "eval_subset": 8, "eval_pgd_steps": 1, "info_plane_every": 2}}
    config = build_config(tiny_config(image_folder, **sections))
    train(config, tmp_path / "whole", quiet=True)

    calls = {"n": 0}

    def stop_once_in_the_second_epoch(self, batch):
        calls["n"] += 1
        return calls["n"] == stop

    monkeypatch.setattr(Trainer, "_should_stop", stop_once_in_the_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "cut", quiet=True)
    saved = load_file(tmp_path / "cut" / "checkpoint.pt")
    assert (saved["epoch"], saved["batch_in_epoch"]) == (1, stop - 6) and saved["partial"] is not None
    monkeypatch.undo()
    first_start = json.loads((tmp_path / "cut" / "meta.json").read_text())
    train(config, tmp_path / "cut", resume=True, quiet=True)
    assert same_final_weights(tmp_path / "whole", tmp_path / "cut")
    meta = json.loads((tmp_path / "cut" / "meta.json").read_text())  # the first start, then each resumption
    assert {k: v for k, v in meta.items() if k != "resumed"} == first_start
    assert len(meta["resumed"]) == 1 and meta["resumed"][0]["started"] >= first_start["started"]
    for name in ("metrics.jsonl", "info_plane.jsonl"):
        whole = [json.loads(line) for line in (tmp_path / "whole" / name).read_text().splitlines()]
        cut = [json.loads(line) for line in (tmp_path / "cut" / name).read_text().splitlines()]
        for row in whole + cut:
            row.pop("seconds", None)
        assert cut == whole, name


def test_a_deadline_stops_training_like_sigterm_and_resume_is_bit_identical(image_folder, tmp_path, monkeypatch):
    """`train(stop_at=...)`, the public deadline the GPU kit uses: a mid-epoch checkpoint, then the same run."""
    import ibrar.train as training

    config = build_config(tiny_config(image_folder, train={"epochs": 2, "eval_subset": 8, "eval_pgd_steps": 1}))
    train(config, tmp_path / "whole", quiet=True)
    clock = {"now": 0.0}

    def ticking() -> float:  # one second per call: the deadline passes in the second epoch
        clock["now"] += 1.0
        return clock["now"]

    monkeypatch.setattr(training.time, "time", ticking)
    with pytest.raises(KeyboardInterrupt, match="--resume"):
        train(config, tmp_path / "cut", quiet=True, stop_at=9.0)
    monkeypatch.undo()
    saved = load_file(tmp_path / "cut" / "checkpoint.pt")
    assert saved["partial"] is not None and (saved["epoch"], saved["batch_in_epoch"]) != (0, 0)
    assert not (tmp_path / "cut" / "final.pt").exists()
    train(config, tmp_path / "cut", resume=True, quiet=True)
    assert same_final_weights(tmp_path / "whole", tmp_path / "cut")


# ---- numerical guard ---------------------------------------------------------------------------------


def test_nan_loss_stops_with_epoch_and_batch_and_keeps_the_last_good_checkpoint(image_folder, tmp_path,
                                                                                  monkeypatch):
    original = Trainer.train_epoch

    def explode_in_second_epoch(self: Trainer, epoch: int) -> dict:
        if epoch == 1:
            for group in self.optimizer.param_groups:
                group["lr"] = float("inf")
        return original(self, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", explode_in_second_epoch)
    config = build_config(tiny_config(image_folder, train={"epochs": 3, "eval_pgd_steps": 0}))
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, batch \d+.*last good checkpoint"):
        train(config, tmp_path / "run", quiet=True)
    state = load_file(tmp_path / "run" / "checkpoint.pt")
    assert state["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())
    assert not (tmp_path / "run" / "final.pt").exists()


def test_cli_huge_learning_rate_exits_2_naming_epoch_and_batch(image_folder, tmp_path, capsys):
    config_path = write_config(tmp_path / "config.yaml", image_folder,
                               train={"epochs": 2, "eval_pgd_steps": 0})
    code = main(["train", str(config_path), "--out", str(tmp_path / "run"), "--quiet", "optim.lr=1e30"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "NaN/Inf at epoch 1, batch" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "final.pt").exists()


# ---- the output folder -------------------------------------------------------------------------------


def test_a_folder_holding_another_run_is_refused_unless_resume_or_overwrite(image_folder, tmp_path, capsys):
    config_path = write_config(tmp_path / "config.yaml", image_folder,
                               train={"epochs": 1, "eval_pgd_steps": 0, "info_plane_every": 0})
    run_dir = tmp_path / "run"
    args = ["train", str(config_path), "--out", str(run_dir), "--quiet"]
    assert main(args) == 0
    capsys.readouterr()
    first = (run_dir / "final.pt").read_bytes()

    assert main(args) == 2
    err = capsys.readouterr().err
    assert "another run's config" in err and "--resume" in err and "--overwrite" in err
    assert (run_dir / "final.pt").read_bytes() == first

    assert main([*args, "--overwrite"]) == 0
    assert main(["train", "--resume", str(run_dir), "--quiet"]) == 0


def test_a_folder_holding_other_files_is_refused(image_folder, tmp_path, capsys):
    config_path = write_config(tmp_path / "config.yaml", image_folder)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("mine")
    assert main(["train", str(config_path), "--out", str(run_dir), "--quiet"]) == 2
    assert "already holds files" in capsys.readouterr().err
    assert (run_dir / "notes.txt").read_text() == "mine"


def test_a_failed_start_leaves_no_run_folder(tmp_path, capsys):
    config_path = write_config(tmp_path / "config.yaml", tmp_path / "no-data-here")
    run_dir = tmp_path / "run"
    assert main(["train", str(config_path), "--out", str(run_dir), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "not found" in err and str(tmp_path / "no-data-here" / "train") in err
    assert not run_dir.exists()
    assert main(["train", "--resume", str(run_dir), "--quiet"]) == 2
    assert "no config.yaml" in capsys.readouterr().err


def test_resume_of_a_folder_that_is_not_a_run_is_refused(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["train", "--resume", str(tmp_path / "empty"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no config.yaml" in err and "Traceback" not in err


def test_overwrite_with_a_failed_start_keeps_the_old_run(image_folder, tmp_path, capsys):
    good = write_config(tmp_path / "good.yaml", image_folder,
                        train={"epochs": 1, "eval_pgd_steps": 0, "info_plane_every": 0})
    bad = write_config(tmp_path / "bad.yaml", tmp_path / "no-data-here")
    run_dir = tmp_path / "run"
    assert main(["train", str(good), "--out", str(run_dir), "--quiet"]) == 0
    first = (run_dir / "final.pt").read_bytes()
    assert main(["train", str(bad), "--out", str(run_dir), "--overwrite", "--quiet"]) == 2
    capsys.readouterr()
    assert (run_dir / "final.pt").read_bytes() == first


def test_resume_refuses_overrides_that_change_what_its_checkpoint_was_trained_with(image_folder, tmp_path, capsys):
    """A batch size of 32 would skip the first half of the interrupted epoch as 'done'; a seed would change the
    rest of the run: a resume keeps them, and says so."""
    config_path = write_config(tmp_path / "config.yaml", image_folder,
                               train={"epochs": 1, "eval_pgd_steps": 0, "info_plane_every": 0})
    run_dir = tmp_path / "run"
    assert main(["train", str(config_path), "--out", str(run_dir), "--quiet"]) == 0
    before = (run_dir / "config.yaml").read_text()
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir), "data.batch_size=32", "seed=7", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "data.batch_size=32 (the run has 16); seed=7 (the run has 0)" in err and "start a new run" in err
    assert (run_dir / "config.yaml").read_text() == before
    assert main(["train", "--resume", str(run_dir), "train.epochs=2", "eval.n=8", "--quiet"]) == 0


def test_a_resumed_run_checks_its_first_epoch_for_a_loss_spike_against_the_last_epoch_it_kept(image_folder,
                                                                                                tmp_path, monkeypatch):
    import ibrar.train as training

    config = build_config(tiny_config(image_folder, train={"epochs": 1, "eval_pgd_steps": 0, "info_plane_every": 0}))
    train(config, tmp_path / "run", quiet=True)
    kept = json.loads((tmp_path / "run" / "metrics.jsonl").read_text())
    compared: list[dict] = []
    check = training.spike_notes
    monkeypatch.setattr(training, "spike_notes", lambda epoch, means, last: compared.append(last) or check(
        epoch, means, last))
    train(config.model_copy(update={"train": config.train.model_copy(update={"epochs": 2})}), tmp_path / "run",
          resume=True, quiet=True)
    assert compared == [kept]


def test_overrides_given_with_resume_are_kept_for_later_resumes(image_folder, tmp_path):
    config_path = write_config(tmp_path / "config.yaml", image_folder,
                               train={"epochs": 1, "eval_pgd_steps": 0, "info_plane_every": 0})
    run_dir = tmp_path / "run"
    assert main(["train", str(config_path), "--out", str(run_dir), "--quiet"]) == 0
    assert main(["train", "--resume", str(run_dir), "train.epochs=2", "--quiet"]) == 0
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["epochs"] == 2
    assert metrics_lines(run_dir) == 2
