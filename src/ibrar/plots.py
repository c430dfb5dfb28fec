"""The paper's figures drawn from run folders, so a finished run can be looked at the way the paper does.

This module only draws. Each `plot_*` function reads run folders' records (config.yaml, metrics.jsonl,
info_plane.jsonl, eval.json) or numbers handed to it (Figure 3's features and Table 5's counts, which
`ibrar.figure_data` computes from the weights), writes `<out_stem>.png` and `<out_stem>.pdf` (Agg backend, no
display needed) and returns the written paths. `ibrar plot KIND RUN_DIR...` calls them through `PLOT_KINDS`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402

from ibrar.errors import InputError
from ibrar.evaluation_record import Evaluation  # noqa: E402
from ibrar.jsonl import read_jsonl  # noqa: E402
from ibrar.run_folder import RunFolder  # noqa: E402

if TYPE_CHECKING:
    from ibrar.figure_data import Confusion, Features

FAMILY_TITLES = {"pgd": "PGD", "cw": "CW", "nifgsm": "NI-FGSM"}


def save_figure(fig: Any, out_stem: str | Path) -> list[Path]:
    """PNG and PDF; the PDF carries no creation date, so redrawing from the same artifacts changes no byte."""
    stem = Path(out_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".pdf")]
    fig.tight_layout()
    for path in paths:
        fig.savefig(path, dpi=120, metadata={"CreationDate": None} if path.suffix == ".pdf" else None)
    plt.close(fig)
    return paths


def run_dirs_of(run_dirs: Sequence[str | Path]) -> list[Path]:
    if isinstance(run_dirs, (str, Path)) or not run_dirs:
        raise InputError(f"run_dirs: expected a non-empty list of run folders, got {run_dirs!r}")
    dirs = [Path(d) for d in run_dirs]
    for d in dirs:
        if not d.is_dir():
            raise InputError(f"run_dirs: {d} is not a folder")
    return dirs


def run_labels(dirs: Sequence[Path], labels: Sequence[str] | None) -> list[str]:
    if labels is None:
        return [d.name for d in dirs]
    if len(labels) != len(dirs):
        raise ValueError(f"labels: expected one label per run folder ({len(dirs)}), got {len(labels)}")
    return list(labels)


def _evaluation(run_dir: Path) -> Evaluation:
    try:
        return RunFolder(run_dir).require_evaluation()
    except InputError as err:
        raise InputError(f"run_dirs: {err}") from None


def _log(file: Path) -> list[dict[str, Any]]:
    """A training log of a run folder (RunFolder.metrics_file or info_plane_file), which must exist."""
    if not file.is_file():
        raise InputError(f"run_dirs: {file} is missing; train the run first")
    return read_jsonl(file)


# ---- Figure 2: accuracy against attack steps --------------------------------------------------------


@dataclass(frozen=True)
class Band:
    """One network's accuracy (%) at each x over its seeds: the mean, the lowest and the highest seed."""

    x: list[int]
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    seeds: int


def _band(x: list[int], rows: Sequence[Sequence[float]]) -> Band:
    values = 100 * np.asarray(rows, dtype=float)
    return Band(x, values.mean(axis=0), values.min(axis=0), values.max(axis=0), len(rows))


def steps_bands(names: Sequence[str], evals: Sequence[Evaluation]) -> dict[str, dict[str, Band]]:
    """Per label (runs given the same label are seeds of one network, in first-seen order) the band of each
    attack family's steps curve, over the step counts every such seed has, and of the clean accuracy ('clean',
    x = [0])."""
    grouped: dict[str, list[Evaluation]] = {}
    for name, result in zip(names, evals, strict=True):
        grouped.setdefault(name, []).append(result)
    bands: dict[str, dict[str, Band]] = {}
    for name, seeds in grouped.items():
        bands[name] = {"clean": _band([0], [[e.clean] for e in seeds])}
        for family in FAMILY_TITLES:
            curves = [e.curves[family] for e in seeds if e.curves.get(family)]
            steps = sorted(set.intersection(*(set(map(int, c)) for c in curves))) if curves else []
            if steps:
                bands[name][family] = _band(steps, [[c[str(k)] for k in steps] for c in curves])
    return bands


def plot_steps(
    run_dirs: Sequence[str | Path], out_stem: str | Path, labels: Sequence[str] | None = None
) -> list[Path]:
    """Accuracy vs attack steps for PGD, CW and NI-FGSM (eval.json "curves"), and the clean accuracies. Runs
    given the same label are seeds of one network: their mean, with a band (and bar) from the lowest seed to
    the highest."""
    dirs = run_dirs_of(run_dirs)
    names = run_labels(dirs, labels)
    evals = [_evaluation(d) for d in dirs]
    if not any(e.curves for e in evals):
        raise InputError("run_dirs: no eval.json has curves; evaluate with --steps 1,5,10,20,50")
    bands = steps_bands(names, evals)
    shown = {name: name if b["clean"].seeds == 1 else f"{name} ({b['clean'].seeds} seeds)"
             for name, b in bands.items()}
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for ax, (family, title) in zip(axes, FAMILY_TITLES.items(), strict=False):
        for name, network in bands.items():
            if family in network:
                band = network[family]
                (line,) = ax.plot(band.x, band.mean, marker="o", label=shown[name])
                if band.seeds > 1:
                    ax.fill_between(band.x, band.low, band.high, color=line.get_color(), alpha=0.2)
        ax.set(
            title=f"({'abc'[list(FAMILY_TITLES).index(family)]}) {title}",
            xlabel="attack steps",
            ylabel="accuracy (%)",
        )
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    clean = [network["clean"] for network in bands.values()]
    axes[3].bar(range(len(clean)), [b.mean[0] for b in clean],
                yerr=[[b.mean[0] - b.low[0] for b in clean], [b.high[0] - b.mean[0] for b in clean]], capsize=3)
    axes[3].set_xticks(range(len(clean)), list(shown.values()), rotation=30, ha="right", fontsize=8)
    axes[3].set(title="(d) clean", ylabel="accuracy (%)")
    return save_figure(fig, out_stem)


# ---- Figure 3: t-SNE of penultimate features --------------------------------------------------------


def plot_tsne(
    features: Sequence[Features],
    out_stem: str | Path,
    labels: Sequence[str],
    seed: int = 0,
) -> list[Path]:
    """2-d t-SNE of penultimate features of clean test examples, one colour per class, runs side by side
    (`ibrar.figure_data.features_of` gives each run's features)."""
    from sklearn.manifold import TSNE

    fig, axes = plt.subplots(1, len(features), figsize=(4.5 * len(features), 4.2), squeeze=False)
    for ax, run, name in zip(axes[0], features, labels, strict=True):
        perplexity = float(min(30.0, max(2.0, (len(run.features) - 1) / 3)))
        points = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
            run.features
        )
        cmap = plt.get_cmap("tab10" if len(run.classes) <= 10 else "tab20")
        for c, cls in enumerate(run.classes):
            sel = run.labels == c
            if sel.any():
                ax.scatter(points[sel, 0], points[sel, 1], s=6, color=cmap(c % cmap.N), label=cls)
        ax.set(title=name, xticks=[], yticks=[])
    if len(features[-1].classes) <= 20:
        axes[0][-1].legend(fontsize=7, markerscale=2, loc="best")
    return save_figure(fig, out_stem)


# ---- Figure 4: convergence --------------------------------------------------------------------------


def _pgd_key(rows: Sequence[dict[str, Any]]) -> str | None:
    for row in rows:
        for key in row:
            if key.startswith("test_pgd") and key.endswith("_acc"):
                return key
    return None


def plot_convergence(
    run_dirs: Sequence[str | Path], out_stem: str | Path, labels: Sequence[str] | None = None
) -> list[Path]:
    """Clean and PGD test accuracy per epoch (metrics.jsonl), one panel per run; runs given the same label are
    seeds of one run and share its panel, each seed its own pair of lines (a slow start is a seed's, not the
    mean's)."""
    dirs = run_dirs_of(run_dirs)
    names = run_labels(dirs, labels)
    panels: dict[str, list[Path]] = {}
    for run_dir, name in zip(dirs, names, strict=True):
        panels.setdefault(name, []).append(run_dir)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False, sharey=True)
    for ax, (name, seeds) in zip(axes[0], panels.items(), strict=True):
        for index, run_dir in enumerate(seeds):
            rows = [r for r in _log(RunFolder(run_dir).metrics_file) if "test_clean_acc" in r]
            epochs = [r["epoch"] for r in rows]
            style = {"alpha": 1.0 if index == 0 else 0.45, "markersize": 4 if index == 0 else 2}
            ax.plot(epochs, [100 * r["test_clean_acc"] for r in rows], marker="o", color="C0",
                    label="Natural" if index == 0 else None, **style)
            key = _pgd_key(rows)
            if key:
                ax.plot(epochs, [100 * r[key] for r in rows], marker="s", color="C1",
                        label=f"Adv ({key[5:-4].upper()})" if index == 0 else None, **style)
        ax.set(title=name if len(seeds) == 1 else f"{name} ({len(seeds)} seeds)", xlabel="epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("test accuracy (%)")
    return save_figure(fig, out_stem)


# ---- Figure 5: the information plane ----------------------------------------------------------------

_MARKERS = "osD^v<>pP*hX"


def plot_infoplane(
    run_dirs: Sequence[str | Path],
    out_stem: str | Path,
    labels: Sequence[str] | None = None,
    layers: Sequence[str] | None = None,
) -> list[Path]:
    """HSIC(X, T_l) against HSIC(Y, T_l) (info_plane.jsonl), one panel per run, one marker per layer,
    coloured by training progress (iteration)."""
    dirs = run_dirs_of(run_dirs)
    names = run_labels(dirs, labels)
    fig, axes = plt.subplots(1, len(dirs), figsize=(5 * len(dirs), 4.2), squeeze=False)
    for ax, run_dir, name in zip(axes[0], dirs, names, strict=True):
        rows = _log(RunFolder(run_dir).info_plane_file)
        if not rows:
            raise InputError(
                f"run_dirs: {run_dir} has no info-plane records; train with train.info_plane_every > 0"
            )
        present = list(rows[0]["hsic_x"])
        chosen = list(layers) if layers else present
        unknown = [layer for layer in chosen if layer not in present]
        if unknown:
            raise InputError(f"layers: {unknown} not recorded in {run_dir}; recorded: {present}")
        its = np.array([r["iteration"] for r in rows])
        scatter = None
        for i, layer in enumerate(chosen):
            xs = [r["hsic_x"][layer] for r in rows]
            ys = [r["hsic_y"][layer] for r in rows]
            scatter = ax.scatter(
                xs, ys, c=its, cmap="viridis", marker=_MARKERS[i % len(_MARKERS)], s=14, label=layer
            )
        ax.set(title=name, xlabel="HSIC(X, T)", ylabel="HSIC(Y, T)")
        ax.legend(fontsize=7)
        if scatter is not None:
            fig.colorbar(scatter, ax=ax, label="iteration")
    return save_figure(fig, out_stem)


# ---- Figure 6: accuracy against beta ----------------------------------------------------------------


def _beta(run_dir: Path) -> float:
    folder = RunFolder(run_dir)
    if not folder.config_file.is_file():
        raise InputError(f"run_dirs: {folder.config_file} is missing; is {run_dir} a run folder?")
    return float(folder.config_dict()["ib"]["beta"])


def plot_beta(
    run_dirs: Sequence[str | Path],
    out_stem: str | Path,
    attacks: Sequence[str] | None = None,
    title: str | None = None,
) -> list[Path]:
    """Clean and robust accuracy (eval.json) against the runs' ib.beta, on a log axis."""
    dirs = run_dirs_of(run_dirs)
    points = sorted(((_beta(d), _evaluation(d)) for d in dirs), key=lambda point: point[0])
    betas = [b for b, _ in points]
    found = [a.name for a in points[0][1].attacks]
    names = list(attacks) if attacks is not None else found
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.plot(betas, [100 * e.clean for _, e in points], marker="o", label="clean")
    for name in names:
        accs = [None if (record := e.attack(name)) is None else record.accuracy for _, e in points]
        if all(a is None for a in accs):
            raise InputError(f"attacks: {name!r} is not in the runs' eval.json; evaluated: {found}")
        ax.plot(betas, [np.nan if a is None else 100 * a for a in accs], marker="s", label=name)
    if min(betas) > 0:
        ax.set_xscale("log")
    ax.set(xlabel="β (α = 0.1·β)", ylabel="accuracy (%)", title=title or "accuracy by β")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, out_stem)


# ---- Table 5: where adversarial examples land --------------------------------------------------------


def top_confusions(
    counts: np.ndarray, classes: Sequence[str], top: int = 4
) -> dict[str, list[tuple[str, int]]]:
    """For each true class, the `top` other classes its adversarial examples are predicted as, with counts."""
    out = {}
    for t, name in enumerate(classes):
        others = Counter(
            {classes[p]: int(counts[t, p]) for p in range(len(classes)) if p != t and counts[t, p]}
        )
        out[name] = others.most_common(top)
    return out


def confusion_markdown(table: dict[str, list[tuple[str, int]]], top: int = 4) -> str:
    lines = [
        "| target class | " + " | ".join(f"#{i + 1}" for i in range(top)) + " |",
        "| --- |" + " --- |" * top,
    ]
    for name, pairs in table.items():
        cells = [f"{cls}-{count}" for cls, count in pairs] + ["-"] * (top - len(pairs))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_confusion(confusion: Confusion, out_stem: str | Path, top: int = 4) -> list[Path]:
    """Table 5: the top classes PGD examples of each true class are predicted as (markdown), and a heatmap
    (`ibrar.figure_data.confusion_of` gives a run's counts)."""
    if not isinstance(top, int) or top < 1:
        raise ValueError(f"top: expected a positive integer, got {top!r}")
    counts, classes, steps = confusion.counts, confusion.classes, confusion.steps
    md = Path(f"{out_stem}.md")
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(
        f"PGD-{steps} examples of {int(counts.sum())} test examples; counts of predicted classes "
        f"other than the true one.\n\n" + confusion_markdown(top_confusions(counts, classes, top), top)
    )
    fig, ax = plt.subplots(figsize=(1.0 + 0.5 * len(classes), 0.8 + 0.45 * len(classes)))
    image = ax.imshow(counts, cmap="Blues")
    ticks = range(len(classes))
    ax.set_xticks(ticks, classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(ticks, classes, fontsize=8)
    ax.set(xlabel="predicted (adversarial)", ylabel="true class", title=f"PGD-{steps} predictions")
    for t in ticks:
        for p in ticks:
            if counts[t, p]:
                ax.text(p, t, str(counts[t, p]), ha="center", va="center", fontsize=7)
    fig.colorbar(image, ax=ax)
    return [md, *save_figure(fig, out_stem)]


# ---- the scale study: robust accuracy against width and training length ---------------------------

SCALE_AXES = {"width": ("width multiplier", 1.0), "epochs": ("epochs (all 50,000 images)", 60.0)}


def plot_scale_study(
    series: dict[str, dict[str, list[tuple[float, dict[str, Any]]]]],
    out_stem: str | Path,
    paper: dict[str, dict[str, float]] | None = None,
    metrics: Sequence[str] = ("PGD", "AutoAttack"),
) -> list[Path]:
    """One panel per axis: each row's robust accuracy (mean over seeds, bars from the lowest to the highest
    seed) against the axis; the paper's value of the row is a star at the paper's setting.

    ``series[axis][row_label]`` is a list of (axis value, cells) with cells mapping a column name to an
    object with ``values`` (one accuracy in % per seed), as the experiments' result tables hold them.
    """
    axes_found = [axis for axis in SCALE_AXES if series.get(axis)]
    if not axes_found:
        raise ValueError(f"series: expected points on at least one of the axes {list(SCALE_AXES)}, got none")
    fig, axes = plt.subplots(1, len(axes_found), figsize=(5.5 * len(axes_found), 4), squeeze=False)
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    labels = list(dict.fromkeys(label for axis in axes_found for label in series[axis]))
    colour_of = {label: cycle[i % len(cycle)] for i, label in enumerate(labels)}  # one colour per row, every panel
    styles = {"PGD": "-", "AutoAttack": "--", "FGSM": ":", "NIFGSM": "-."}
    for ax, axis in zip(axes[0], axes_found, strict=True):
        xlabel, paper_x = SCALE_AXES[axis]
        for row_label, row_points in series[axis].items():
            colour = colour_of[row_label]
            ordered = sorted(row_points, key=lambda item: item[0])
            for metric in metrics:
                xs, means, lows, highs = [], [], [], []
                for x, cells in ordered:
                    values = list(cells[metric].values) if metric in cells else []
                    if values:
                        xs.append(x)
                        means.append(float(np.mean(values)))
                        lows.append(means[-1] - min(values))
                        highs.append(max(values) - means[-1])
                if xs:
                    ax.errorbar(xs, means, yerr=[lows, highs], color=colour, linestyle=styles.get(metric, "-"),
                                marker="o", capsize=3, label=f"{row_label}: {metric}")
            paper_value = (paper or {}).get(row_label, {}).get(metrics[0])
            if paper_value is not None:
                ax.plot([paper_x], [paper_value], marker="*", markersize=12, color=colour, linestyle="none",
                        label=f"{row_label}: paper {metrics[0]}")
        ax.set(xlabel=xlabel, ylabel="robust accuracy (%)", title=f"Robust accuracy against {axis}")
        if axis == "width":
            ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    return save_figure(fig, out_stem)


PLOT_KINDS: dict[str, Callable[..., list[Path]]] = {  # the kinds drawn from run folders' records alone
    "steps": plot_steps,
    "convergence": plot_convergence,
    "infoplane": plot_infoplane,
    "beta": plot_beta,
}
MODEL_KINDS = ("tsne", "confusion")  # drawn from numbers `ibrar.figure_data` computes from the weights or saved
