"""The trainer: the run folder, every method with and without IB-RAR, learning, and exact resumption."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch
import yaml

from conftest import tiny_config
from ibrar import __version__
from ibrar.checkpoint import load_file
from ibrar.config import build_config
from ibrar.loading import load_trained
from ibrar.train import Trainer, train

IB_ON = {"ib": {"enabled": True}, "mask": {"enabled": True, "refresh_every": 2}}


def run_config(root: Path, **sections):
    return build_config(tiny_config(root, **sections))


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def assert_same_final_weights(a: Path, b: Path) -> None:
    state_a, state_b = load_file(a / "final.pt"), load_file(b / "final.pt")
    for part in ("model", "mask"):
        if state_a[part] is None:
            assert state_b[part] is None
            continue
        assert state_a[part].keys() == state_b[part].keys()
        for key, tensor in state_a[part].items():
            assert torch.equal(tensor, state_b[part][key]), f"{part}.{key} differs after resuming"


def stop_during_epoch(monkeypatch: pytest.MonkeyPatch, stop_epoch: int) -> None:
    """Make the trainer behave as if SIGTERM arrived during epoch `stop_epoch` (0-based)."""
    original = Trainer.train_epoch

    def train_epoch(self: Trainer, epoch: int) -> dict:
        if epoch == stop_epoch:
            self._stop_signal = signal.SIGTERM
        return original(self, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", train_epoch)


@pytest.fixture(scope="module")
def ib_run(image_folder, tmp_path_factory) -> Path:
    """A finished 3-epoch run with IB-RAR and the mask, shared by the tests that only read it."""
    run_dir = tmp_path_factory.mktemp("runs") / "ib-run"
    train(run_config(image_folder, train={"epochs": 3}, **IB_ON), run_dir, quiet=True)
    return run_dir


def test_run_folder_holds_every_artifact(ib_run):
    names = {p.name for p in ib_run.iterdir()}
    expected = {"config.yaml", "meta.json", "metrics.jsonl", "info_plane.jsonl", "checkpoint.pt", "final.pt"}
    assert expected <= names
    assert not [n for n in names if n.endswith(".tmp")], "a temporary checkpoint file was left behind"


def test_config_yaml_is_the_resolved_config_and_reloads(ib_run):
    saved = yaml.safe_load((ib_run / "config.yaml").read_text())
    assert saved["ib"]["enabled"] is True and saved["mask"]["refresh_every"] == 2
    assert saved["optim"]["schedule"] == "step"  # defaults are written out, not left implicit
    assert saved.pop("resolved") is True  # read back, the profile is not applied again
    assert build_config(saved, resolved=True).model_dump(mode="json") == saved


def test_meta_json_records_versions_commit_seed_and_hardware(ib_run):
    meta = json.loads((ib_run / "meta.json").read_text())
    assert meta["ibrar_version"] == __version__
    assert meta["torch"] == torch.__version__
    assert meta["git_commit"] is None or isinstance(meta["git_commit"], str)
    assert meta["seed"] == 0
    assert meta["device"] == "cpu"
    for key in ("platform", "processor", "cpu_count", "python"):
        assert meta[key], key


def test_metrics_has_one_line_per_epoch_with_losses_accuracies_and_hsic(ib_run):
    lines = metrics(ib_run)
    assert [line["epoch"] for line in lines] == [1, 2, 3]
    for line in lines:
        for key in ("lr", "loss", "train_acc", "test_clean_acc", "test_pgd2_acc", "seconds"):
            assert key in line, key
        for layer in ("block2", "fc1"):  # small_cnn's robust layers
            assert f"hsic_x/{layer}" in line and f"hsic_y/{layer}" in line
        assert 0 <= line["train_acc"] <= 1 and 0 <= line["test_clean_acc"] <= 1
        assert line["seconds"] >= 0


def test_info_plane_rows_name_every_ib_layer(ib_run):
    rows = [json.loads(line) for line in (ib_run / "info_plane.jsonl").read_text().splitlines()]
    assert rows, "info_plane.jsonl is empty"
    iterations = [r["iteration"] for r in rows]
    assert iterations == sorted(iterations) and iterations[0] == 0
    assert all(i % 3 == 0 for i in iterations)  # info_plane_every=3
    assert set(rows[0]["hsic_x"]) == {"block1", "block2", "fc1"} == set(rows[0]["hsic_y"])


def test_final_checkpoint_loads_into_an_evaluable_model(ib_run, image_folder):
    bundle, config, state = load_trained(ib_run)
    assert state["num_classes"] == 4 and config.ib.enabled
    assert bundle.mask is not None and not bundle.model.training
    with torch.no_grad():
        assert bundle.model(torch.rand(2, 3, 32, 32)).shape == (2, 4)
    checkpoint = load_file(ib_run / "checkpoint.pt")
    assert checkpoint["epoch"] == 3


@pytest.mark.parametrize("with_ib", [False, True], ids=["plain", "ibrar+mask"])
@pytest.mark.parametrize("method", ["ce", "pgd_at", "trades", "mart", "vib"])
def test_every_method_trains_one_epoch(method, with_ib, image_folder, tmp_path):
    sections = IB_ON if with_ib else {}
    config = run_config(image_folder, method={"name": method, "steps": 1}, data={"batch_size": 32},
                        train={"epochs": 1, "eval_subset": 8, "eval_pgd_steps": 1, "info_plane_every": 2,
                               "forbid_host_sync": True},
                        **sections)
    train(config, tmp_path / "run", quiet=True)  # forbid_host_sync: the step reads nothing back to the host
    (line,) = metrics(tmp_path / "run")
    assert torch.isfinite(torch.tensor(line["loss"]))
    assert any(k.startswith("hsic_x/") for k in line) == with_ib  # vib prefixes its layers with backbone.
    assert (tmp_path / "run" / "final.pt").is_file()


def test_loss_falls_on_learnable_data(image_folder, tmp_path):
    config = run_config(image_folder, train={"epochs": 4, "eval_pgd_steps": 0, "info_plane_every": 0},
                        data={"augment": False})
    train(config, tmp_path / "run", quiet=True)
    losses = [line["loss"] for line in metrics(tmp_path / "run")]
    assert losses[-1] < 0.7 * losses[0], losses


def test_ib_epochs_turns_the_ib_terms_off_after_that_many_epochs(image_folder, tmp_path):
    config = run_config(image_folder, ib={"enabled": True, "epochs": 1},
                        train={"epochs": 2, "eval_pgd_steps": 0, "info_plane_every": 0})
    train(config, tmp_path / "run", quiet=True)
    first, second = metrics(tmp_path / "run")
    assert "hsic_x/fc1" in first and "ib_penalty" in first
    assert not [k for k in second if k.startswith("hsic_") or k == "ib_penalty"], second


@pytest.mark.parametrize("sections", [
    pytest.param(IB_ON, id="ce+ibrar+mask"),
    pytest.param({"method": {"name": "pgd_at", "steps": 2}}, id="pgd_at"),
    pytest.param({"method": {"name": "pgd_at", "steps": 1}, **IB_ON}, id="pgd_at+ibrar+mask"),
])
def test_resumed_run_ends_bit_identical_to_an_uninterrupted_one(sections, image_folder, tmp_path,
                                                                monkeypatch):
    config = run_config(image_folder, train={"epochs": 3, "eval_pgd_steps": 1}, **sections)
    train(config, tmp_path / "straight", quiet=True)

    stop_during_epoch(monkeypatch, stop_epoch=1)
    with pytest.raises(KeyboardInterrupt, match="resume"):
        train(config, tmp_path / "resumed", quiet=True)
    monkeypatch.undo()
    assert load_file(tmp_path / "resumed" / "checkpoint.pt")["epoch"] == 1
    assert not (tmp_path / "resumed" / "final.pt").exists()
    assert len(metrics(tmp_path / "resumed")) == 1

    train(config, tmp_path / "resumed", resume=True, quiet=True)
    assert_same_final_weights(tmp_path / "straight", tmp_path / "resumed")
    straight, resumed = metrics(tmp_path / "straight"), metrics(tmp_path / "resumed")
    assert [m["epoch"] for m in resumed] == [1, 2, 3]
    for a, b in zip(straight, resumed, strict=True):
        a.pop("seconds"), b.pop("seconds")
        assert a == b


def test_resuming_a_finished_run_changes_nothing(ib_run, image_folder, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(ib_run, copy)
    config = run_config(image_folder, train={"epochs": 3}, **IB_ON)
    train(config, copy, resume=True, quiet=True)
    assert_same_final_weights(ib_run, copy)
    assert len(metrics(copy)) == 3


def test_a_deadline_passed_before_the_masks_final_fit_stops_it_and_a_resume_ends_as_an_unbroken_run(
        image_folder, tmp_path, monkeypatch):
    """`stop_at` is the GPU kit's time budget: the final fit must not run past it (the stage would overrun its
    call); it stops as an epoch does (KeyboardInterrupt, no final weights), and the resume fits the mask then."""
    import time

    import ibrar.train as training

    config = run_config(image_folder, train={"epochs": 1, "eval_subset": 8, "eval_pgd_steps": 0,
                                             "info_plane_every": 0}, **IB_ON)
    assert config.mask.rule == "paper" and config.mask.final_fit
    train(config, tmp_path / "whole", quiet=True)
    real_time, late = time.time, {"now": False}
    original_finish = Trainer.finish

    def finish_after_the_deadline(self: Trainer) -> None:  # the last epoch's monitor ran past the deadline
        late["now"] = True
        original_finish(self)

    monkeypatch.setattr(training.time, "time", lambda: real_time() + (3600 if late["now"] else 0))
    monkeypatch.setattr(Trainer, "finish", finish_after_the_deadline)
    with pytest.raises(KeyboardInterrupt, match="final fit.*--resume"):
        train(config, tmp_path / "cut", quiet=True, stop_at=real_time() + 600)
    monkeypatch.undo()
    assert not (tmp_path / "cut" / "final.pt").exists()
    assert load_file(tmp_path / "cut" / "checkpoint.pt")["epoch"] == 1  # trained: the resume only fits the mask
    train(config, tmp_path / "cut", resume=True, quiet=True)
    assert_same_final_weights(tmp_path / "whole", tmp_path / "cut")


def _quick(image_folder, **train_section):
    return build_config(tiny_config(image_folder, train={"epochs": 1, "eval_subset": 8, "eval_pgd_steps": 0,
                                                         "info_plane_every": 0, **train_section}))


def test_tensorboard_gets_every_metric_when_installed(image_folder, tmp_path, monkeypatch):
    import sys
    import types

    written: list[tuple[str, float, int]] = []

    class RecordingWriter:
        def __init__(self, log_dir: str) -> None:
            self.log_dir = log_dir

        def add_scalar(self, tag: str, value: float, step: int) -> None:
            written.append((tag, value, step))

        def close(self) -> None:
            written.append(("closed", 0.0, 0))

    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = RecordingWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    train(_quick(image_folder, tensorboard=True), tmp_path / "run", quiet=True)
    tags = {tag for tag, _, _ in written}
    assert {"loss", "train_acc", "test_clean_acc", "lr", "closed"} <= tags
    assert all(step == 1 for tag, _, step in written if tag != "closed")


def test_tensorboard_missing_is_a_message_not_a_failure(image_folder, tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # makes the import fail
    train(_quick(image_folder, tensorboard=True), tmp_path / "run", quiet=True)
    assert "tensorboard is not installed" in capsys.readouterr().out
    assert (tmp_path / "run" / "final.pt").is_file()


def test_a_compiled_model_trains_like_the_eager_one_with_taps_and_mask(image_folder, tmp_path):
    """torch.compile around the model (as train.compile does on CUDA; here with a CPU backend) must see the
    IB taps and the mask's hook, give the same losses and weights, and trace the step without graph breaks;
    the host-sync guard stays on throughout (reads made by the compiler itself are not the step's)."""
    from torch._dynamo.utils import counters

    config = run_config(image_folder, method={"name": "pgd_at", "steps": 1}, data={"batch_size": 32},
                        train={"epochs": 1, "info_plane_every": 2, "forbid_host_sync": True}, **IB_ON)
    results = {}
    for compiled in (False, True):
        (tmp_path / str(compiled)).mkdir()
        trainer = Trainer(config, tmp_path / str(compiled), quiet=True)
        if compiled:
            torch._dynamo.reset()
            counters.clear()
            trainer.train_model = torch.compile(trainer.train_model, backend="aot_eager")
        results[compiled] = (trainer.train_epoch(0), trainer.model.state_dict())
    eager, compiled = results[False], results[True]
    assert eager[0].keys() == compiled[0].keys()
    for key, value in eager[0].items():
        assert compiled[0][key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    for key, value in eager[1].items():
        assert torch.allclose(compiled[1][key], value, rtol=1e-4, atol=1e-6), key
    assert not counters["graph_break"], dict(counters["graph_break"])


def test_fast_path_options_on_the_cpu_are_off_with_a_note(image_folder, tmp_path, capsys):
    config = run_config(image_folder, train={"epochs": 1, "amp": True, "compile": True, "eval_pgd_steps": 0})
    trainer = Trainer(config, tmp_path, quiet=False)
    assert trainer.train_model is trainer.model  # not compiled
    assert "train.amp, train.compile belong to the CUDA fast path and are off on the cpu" in capsys.readouterr().out


def test_the_resident_loader_trains_the_same_weights_as_the_plain_one(image_folder, tmp_path):
    """data.resident=true forces the CUDA default (the training set kept on the device) onto the CPU."""
    from ibrar.data import BatchLoader, ResidentLoader

    runs = {}
    for resident in (False, True):
        config = run_config(image_folder, data={"resident": resident}, train={"epochs": 1, "eval_pgd_steps": 1},
                            method={"name": "pgd_at", "steps": 1}, **IB_ON)
        trainer = train(config, tmp_path / str(resident), quiet=True)
        assert type(trainer.train_loader) is (ResidentLoader if resident else BatchLoader)
        runs[resident] = tmp_path / str(resident)
    assert_same_final_weights(runs[False], runs[True])
    plain, resident_line = metrics(runs[False])[0], metrics(runs[True])[0]
    plain.pop("seconds"), resident_line.pop("seconds")
    assert plain == resident_line


@pytest.mark.parametrize(("every", "crash_at", "checkpoint_epoch"), [(2, 4, 2), (0, 3, None)],
                         ids=["every-2-epochs", "only-at-the-end"])
def test_a_run_killed_between_checkpoints_resumes_bit_identical_from_the_last_one(
        every, crash_at, checkpoint_epoch, image_folder, tmp_path, monkeypatch):
    """train.checkpoint_every: the run dies (no signal, no checkpoint of its own) in epoch `crash_at`'s monitor;
    the resumed run starts from the last checkpoint (or from scratch) and ends as the uninterrupted one."""
    from ibrar.monitor import Monitor

    config = run_config(image_folder, train={"epochs": 4, "eval_pgd_steps": 1, "checkpoint_every": every},
                        **IB_ON)
    saved = []
    save = Trainer.save_checkpoint
    monkeypatch.setattr(Trainer, "save_checkpoint", lambda self: saved.append(self.epoch) or save(self))
    train(config, tmp_path / "straight", quiet=True)
    assert saved == ([2, 4] if every == 2 else [4])  # and always after the last epoch
    assert load_file(tmp_path / "straight" / "checkpoint.pt")["epoch"] == 4

    calls = []
    monitor = Monitor.__call__

    def dies_in_the_monitor(self, model):
        calls.append(1)
        if len(calls) == crash_at:
            raise RuntimeError("killed")
        return monitor(self, model)

    monkeypatch.setattr(Monitor, "__call__", dies_in_the_monitor)
    with pytest.raises(RuntimeError, match="killed"):
        train(config, tmp_path / "resumed", quiet=True)
    monkeypatch.undo()
    checkpoint = tmp_path / "resumed" / "checkpoint.pt"
    assert (load_file(checkpoint)["epoch"] if checkpoint.exists() else None) == checkpoint_epoch
    assert len(metrics(tmp_path / "resumed")) == crash_at - 1  # lines past the checkpoint, to be cut back

    train(config, tmp_path / "resumed", resume=True, quiet=True)
    assert_same_final_weights(tmp_path / "straight", tmp_path / "resumed")
    straight, resumed = metrics(tmp_path / "straight"), metrics(tmp_path / "resumed")
    assert [m["epoch"] for m in resumed] == [1, 2, 3, 4]
    for a, b in zip(straight, resumed, strict=True):
        a.pop("seconds"), b.pop("seconds")
        assert a == b
    plane = (tmp_path / "resumed" / "info_plane.jsonl").read_text()
    assert plane == (tmp_path / "straight" / "info_plane.jsonl").read_text()


def test_a_last_batch_of_one_sits_the_epoch_out_and_a_subset_beyond_the_data_is_a_config_error(image_folder,
                                                                                                tmp_path):
    """17 images in batches of 16 would leave BatchNorm a batch of one, which it cannot train on."""
    from ibrar.config import ConfigError

    sections = {"train": {"epochs": 1, "eval_pgd_steps": 0, "info_plane_every": 0}}
    trainer = train(build_config(tiny_config(image_folder, data={"train_subset": 17}, **sections)),
                    tmp_path / "run", quiet=True)
    assert len(trainer.train_loader) == 1 and trainer.iteration == 1
    with pytest.raises(ConfigError, match=r"data.train_subset=5000: the training set .* has only \d+ images"):
        train(build_config(tiny_config(image_folder, data={"train_subset": 5000}, **sections)), tmp_path / "big",
              quiet=True)
