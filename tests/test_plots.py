"""Every figure of `ibrar plot` is drawn from a small trained run folder as a non-empty PNG (and PDF)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import tiny_config
from ibrar import plots
from ibrar.cli import main
from ibrar.config import build_config
from ibrar.errors import InputError
from ibrar.plots import MODEL_KINDS, PLOT_KINDS, confusion_markdown, plot_beta, plot_steps, top_confusions
from ibrar.run_eval import evaluate_run
from ibrar.run_folder import RunFolder
from ibrar.train import train


@pytest.fixture(scope="module")
def runs(tmp_path_factory, image_folder):
    """Two tiny IB runs (beta 0.05 and 0.1), trained and evaluated once with attack-steps curves."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("plot-runs")
    dirs = []
    for beta in (0.05, 0.1):
        config = build_config(tiny_config(image_folder, ib={"enabled": True, "layers": "all", "beta": beta,
                                                            "alpha": beta / 10}))
        run_dir = folder / f"beta{beta}"
        train(config, run_dir, quiet=True)
        evaluate_run(run_dir, attacks=["fgsm", "pgd2"], n=16, steps=[1, 2], quiet=True, device="cpu",
                     large_eps_check=False)
        dirs.append(run_dir)
    yield dirs
    torch.set_num_threads(threads)


@pytest.mark.parametrize("kind", [*sorted(PLOT_KINDS), *MODEL_KINDS])
def test_plot_command_writes_a_png_and_a_pdf(kind, runs, tmp_path, capsys):
    stem = tmp_path / kind
    run_args = [str(runs[0])] if kind == "confusion" else [str(r) for r in runs]
    extra = ["--n", "16"] if kind in ("tsne", "confusion") else []
    assert main(["plot", kind, *run_args, "--out", str(stem), *extra]) == 0
    for suffix in (".png", ".pdf"):
        assert (tmp_path / f"{kind}{suffix}").stat().st_size > 0
    assert str(stem) in capsys.readouterr().out


def test_confusion_writes_the_top_classes_as_markdown(runs, tmp_path):
    assert main(["plot", "confusion", str(runs[0]), "--out", str(tmp_path / "t5"), "--n", "16"]) == 0
    text = (tmp_path / "t5.md").read_text()
    assert "| target class | #1 | #2 | #3 | #4 |" in text and text.count("\n| ") >= 4


def test_top_confusions_leave_out_the_true_class_and_sort_by_count():
    counts = np.array([[5, 1, 3], [2, 7, 0], [0, 0, 9]])
    table = top_confusions(counts, ["a", "b", "c"], top=2)
    assert table == {"a": [("c", 3), ("b", 1)], "b": [("a", 2)], "c": []}
    assert "| b | a-2 | - |" in confusion_markdown(table, top=2)


def test_runs_given_one_label_are_drawn_as_the_mean_of_their_seeds_within_their_band(runs, tmp_path):
    evals = [RunFolder(d).require_evaluation() for d in runs]
    bands = plots.steps_bands(["net", "net"], evals)
    assert list(bands) == ["net"]
    pgd = bands["net"]["pgd"]
    assert pgd.x == [1, 2] and pgd.seeds == 2
    rows = 100 * np.array([[e.curves["pgd"][str(k)] for k in pgd.x] for e in evals])
    np.testing.assert_allclose(pgd.mean, rows.mean(axis=0))
    np.testing.assert_allclose(pgd.low, rows.min(axis=0))
    np.testing.assert_allclose(pgd.high, rows.max(axis=0))
    np.testing.assert_allclose(bands["net"]["clean"].mean, [100 * np.mean([e.clean for e in evals])])
    # a label of its own per run: each is its own network, its band a line
    alone = plots.steps_bands(["a", "b"], evals)
    assert list(alone) == ["a", "b"] and alone["a"]["pgd"].seeds == 1
    np.testing.assert_allclose(alone["a"]["pgd"].low, alone["a"]["pgd"].high)
    assert plot_steps(runs, tmp_path / "steps", labels=["net", "net"])[0].stat().st_size > 0


def test_seeds_given_one_label_share_one_convergence_panel(runs, tmp_path):
    import matplotlib.image

    widths = {}
    for labels in (["run", "run"], ["a", "b"]):
        png = plots.plot_convergence(runs, tmp_path / "-".join(labels), labels=labels)[0]
        widths[len(set(labels))] = matplotlib.image.imread(png).shape[1]
    assert widths[2] == 2 * widths[1]  # one panel of 4.2 inches per label, not per folder


def test_plot_beta_rejects_an_attack_that_was_not_evaluated(runs, tmp_path):
    with pytest.raises(ValueError, match="attacks"):
        plot_beta(runs, tmp_path / "beta", attacks=["cw"])


def test_plots_reject_a_missing_folder_and_mismatched_labels(runs, tmp_path):
    with pytest.raises(ValueError, match="run_dirs"):
        plot_steps([tmp_path / "nothing"], tmp_path / "steps")
    with pytest.raises(ValueError, match="labels"):
        plot_steps(runs, tmp_path / "steps", labels=["one"])


def test_plot_command_reports_a_bad_n(runs, tmp_path, capsys):
    assert main(["plot", "tsne", str(runs[0]), "--out", str(tmp_path / "x"), "--n", "1"]) == 2
    assert "--n" in capsys.readouterr().err


def test_a_figure_redrawn_from_the_same_data_is_byte_identical(tmp_path):
    """`ibrar report --figures` redraws committed figures: an unchanged artifact must not show as a change."""
    import time

    import matplotlib.pyplot as plt

    from ibrar.plots import save_figure

    def draw(stem):
        fig, ax = plt.subplots()
        ax.plot([1, 5, 10], [0.3, 0.2, 0.1])
        return save_figure(fig, tmp_path / stem)

    first = draw("a")
    time.sleep(1.1)  # a creation date written in seconds would differ
    second = draw("b")
    for one, other in zip(first, second, strict=True):
        assert one.read_bytes() == other.read_bytes(), one.suffix


def test_figure_data_saved_beside_a_run_draws_the_same_figures_without_its_weights(runs, tmp_path):
    """What a GPU lease brings back (features and counts, no checkpoint) is enough for Figure 3 and Table 5."""
    import shutil

    from ibrar.figure_data import (
        CONFUSION_FILE,
        FEATURES_FILE,
        confusion_counts,
        confusion_of,
        load_confusion,
        load_features,
        penultimate_features,
        save_confusion,
        save_features,
    )

    features = penultimate_features(runs[0], n=16)
    confusion = confusion_counts(runs[0], n=16, steps=10)
    copy = tmp_path / "from-gpu"
    shutil.copytree(runs[0], copy, ignore=shutil.ignore_patterns("*.pt", "*.sha256"))
    save_features(features, copy / FEATURES_FILE)
    save_confusion(confusion, copy / CONFUSION_FILE)
    loaded = load_features(copy / FEATURES_FILE)
    assert loaded.classes == features.classes and (loaded.labels == features.labels).all()
    assert np.allclose(loaded.features, features.features, rtol=1e-3, atol=1e-3)  # kept as float16
    assert (load_confusion(copy / CONFUSION_FILE).counts == confusion.counts).all()
    assert int(confusion.counts.sum()) == 16 and (confusion.n, confusion.steps) == (16, 10)
    with pytest.raises(InputError, match="holds"):  # no weights to compute other examples from
        confusion_of(copy, n=32)
    assert main(["plot", "confusion", str(copy), "--out", str(tmp_path / "t5"), "--n", "16"]) == 0
    assert "PGD-10 examples of 16 test examples" in (tmp_path / "t5.md").read_text()
    assert main(["plot", "tsne", str(copy), "--out", str(tmp_path / "t3"), "--n", "16"]) == 0
    assert (tmp_path / "t3.png").stat().st_size > 0
