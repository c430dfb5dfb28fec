"""What a user reads per epoch: a line of numbers with units, not a Python dict."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import tiny_config
from ibrar.config import build_config
from ibrar.metrics import plane_rows, progress_line, spike_notes
from ibrar.train import train


def test_the_epoch_line_reads_as_numbers_with_units():
    line = {"epoch": 3, "lr": 0.01, "loss": 0.30214, "train_acc": 0.5321, "test_clean_acc": 0.575,
            "test_pgd10_acc": 0.01, "grad_norm": 2.0, "seconds": 88.4}
    assert progress_line(line, 8) == "epoch 3/8  loss 0.302  train 53.2%  clean 57.5%  PGD-10 1.0%  88 s"


def test_the_epoch_line_leaves_out_what_was_not_measured():
    assert progress_line({"epoch": 1, "loss": 1.5, "train_acc": 0.25, "seconds": 2.0}, 2) == \
        "epoch 1/2  loss 1.500  train 25.0%  2 s"


def test_spikes_are_sentences_with_the_numbers():
    notes = spike_notes(4, {"grad_norm": 1.0, "grad_norm_max": 50.0, "loss": 30.0}, {"loss": 1.0})
    assert notes == ["gradient-norm spike in epoch 4: max 50 vs mean 1", "loss spike in epoch 4: 30 after 1"]
    assert spike_notes(4, {"grad_norm": 1.0, "grad_norm_max": 5.0, "loss": 1.1}, {"loss": 1.0}) == []


@given(previous=st.floats(-5.0, 5.0), fall=st.floats(0.0, 50.0))
def test_a_falling_loss_is_never_a_spike(previous, fall):
    """The IB loss (CE - lambda * HSIC(Y, Z)) can cross zero on its way down: 0.0069 -> -0.237 is progress."""
    assert spike_notes(3, {"loss": previous - fall}, {"loss": previous}) == []


@pytest.mark.parametrize(("previous", "now", "spike"), [
    (1.0, 10.5, True), (1.0, 9.5, False),      # a positive loss: ten times the last, as before
    (0.007, 1.0, True), (0.007, 0.5, False),   # near zero: a rise against a tenth of a nat
    (-0.5, 4.0, False), (-0.5, 4.6, True),     # below zero: a rise against the loss's size
])
def test_a_rise_is_measured_against_the_losss_size(previous, now, spike):
    assert bool(spike_notes(3, {"loss": now}, {"loss": previous})) is spike


def test_training_prints_one_such_line_per_epoch(image_folder, tmp_path, capsys):
    config = build_config(tiny_config(image_folder, train={"epochs": 2, "eval_pgd_steps": 1}))
    train(config, tmp_path / "run", quiet=False)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("epoch ")]
    pattern = r"epoch \d/2  loss \d+\.\d{3}  train \d+\.\d%  clean \d+\.\d%  PGD-1 \d+\.\d%  \d+ s"
    assert len(lines) == 2 and all(re.fullmatch(pattern, ln) for ln in lines), lines


def test_the_monitor_is_evaluate_on_a_fixed_balanced_subset():
    import torch

    from attack_fixtures import test_data, trained_model
    from ibrar.data import ImageData
    from ibrar.data.loader import balanced_subset
    from ibrar.monitor import Monitor

    model = trained_model()
    x, y = test_data(256)
    data = ImageData((x * 255).round().to(torch.uint8), y, [str(c) for c in range(10)])
    monitor = Monitor(data, n=100, eps=8 / 255, pgd_steps=5, batch_size=32, seed=0, device=torch.device("cpu"))
    result = monitor(model)
    chosen = balanced_subset(y, 100, 0)
    with torch.no_grad():
        clean = (model(data.images[chosen].float() / 255).argmax(1) == y[chosen]).float().mean().item()
    assert result["test_clean_acc"] == clean
    assert result["test_pgd5_acc"] < clean  # an undefended model loses accuracy under PGD-5
    assert monitor(model) == result  # seeded: the same numbers every epoch for the same weights
    assert not model.training


@pytest.mark.parametrize("chunk", [None, 7], ids=["one-batch", "chunks-of-7"])
def test_the_monitor_in_one_batch_gives_the_numbers_of_evaluate_in_batches(chunk):
    """The monitor attacks the whole subset at once, yet gets exactly what `evaluate` gets at eval.batch_size
    (whose attack reseeds its random start per batch); some labels are wrong, so that clean mistakes shift
    the batches of attacked examples."""
    import torch

    from attack_fixtures import test_data, trained_model
    from ibrar.attacks import PGD
    from ibrar.data import ImageData
    from ibrar.data.loader import balanced_subset
    from ibrar.evaluate import evaluate
    from ibrar.monitor import Monitor

    model = trained_model()
    x, y = test_data(256)
    y = torch.where(torch.arange(256) % 9 == 0, (y + 1) % 10, y)  # clean mistakes
    data = ImageData((x * 255).round().to(torch.uint8), y, [str(c) for c in range(10)])
    chosen = balanced_subset(y, 120, 0)
    report = evaluate(model, data.images[chosen], y[chosen], {"pgd": PGD(model, eps=8 / 255, alpha=2 / 255,
                                                                        steps=5, seed=0)},
                      batch_size=32, device="cpu", seed=0)
    expected = {"test_clean_acc": round(report.clean * 120) / 120,
                "test_pgd5_acc": int(report.robust["pgd"].sum()) / 120}
    assert 0 < expected["test_pgd5_acc"] < expected["test_clean_acc"] < 1
    monitor = Monitor(data, n=120, eps=8 / 255, pgd_steps=5, batch_size=32, seed=0, device=torch.device("cpu"),
                      chunk=chunk)
    assert monitor(model) == expected


def test_information_plane_rows_keep_every_value_and_its_name():
    import torch

    rows = [{"iteration": i, "epoch": 0, "hsic_x": {"a": torch.tensor(0.1 * i), "b": torch.tensor(1 / 3)},
             "hsic_y": {"a": torch.tensor(2.0 + i), "b": torch.tensor(1e-7, dtype=torch.float64)}} for i in (0, 3)]
    out = plane_rows(rows)
    assert out == [{"iteration": r["iteration"], "epoch": 0,
                    "hsic_x": {k: float(v) for k, v in r["hsic_x"].items()},
                    "hsic_y": {k: float(v) for k, v in r["hsic_y"].items()}} for r in rows]
    assert plane_rows([]) == []


def test_train_monitor_batch_size_caps_the_monitors_batch_and_keeps_its_numbers(image_folder, tmp_path):
    from ibrar.train import Trainer

    results = {}
    for cap in (None, 3):
        config = build_config(tiny_config(image_folder, train={"epochs": 1, "eval_pgd_steps": 1,
                                                               "monitor_batch_size": cap}))
        trainer = Trainer(config, tmp_path / str(cap), quiet=True)
        assert trainer.monitor.chunk == cap
        results[cap] = trainer.monitor(trainer.model)
    assert results[None] == results[3]
