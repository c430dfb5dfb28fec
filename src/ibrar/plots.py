"""The paper's figures drawn from run folders, so a finished run can be looked at the way the paper does.

Each `plot_*` function reads run folders (config.yaml, metrics.jsonl, info_plane.jsonl, eval.json, final.pt),
writes `<out_stem>.png` and `<out_stem>.pdf` (Agg backend, no display needed) and returns the written paths.
`ibrar plot KIND RUN_DIR...` calls them through `PLOT_KINDS`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from ibrar.errors import InputError
from ibrar.jsonl import read_jsonl  # noqa: E402

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


def _run_dirs(run_dirs: Sequence[str | Path]) -> list[Path]:
    if isinstance(run_dirs, (str, Path)) or not run_dirs:
        raise InputError(f"run_dirs: expected a non-empty list of run folders, got {run_dirs!r}")
    dirs = [Path(d) for d in run_dirs]
    for d in dirs:
        if not d.is_dir():
            raise InputError(f"run_dirs: {d} is not a folder")
    return dirs


def _labels(dirs: Sequence[Path], labels: Sequence[str] | None) -> list[str]:
    if labels is None:
        return [d.name for d in dirs]
    if len(labels) != len(dirs):
        raise ValueError(f"labels: expected one label per run folder ({len(dirs)}), got {len(labels)}")
    return list(labels)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InputError(f"run_dirs: {path} is missing; train and evaluate the run first")
    return json.loads(path.read_text())


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise InputError(f"run_dirs: {path} is missing; train the run first")
    return read_jsonl(path)


# ---- Figure 2: accuracy against attack steps --------------------------------------------------------


def plot_steps(
    run_dirs: Sequence[str | Path], out_stem: str | Path, labels: Sequence[str] | None = None
) -> list[Path]:
    """Accuracy vs attack steps for PGD, CW and NI-FGSM (eval.json "curves"), and the clean accuracies."""
    dirs = _run_dirs(run_dirs)
    names = _labels(dirs, labels)
    evals = [_read_json(d / "eval.json") for d in dirs]
    if not any(e.get("curves") for e in evals):
        raise InputError("run_dirs: no eval.json has curves; evaluate with --steps 1,5,10,20,50")
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for ax, (family, title) in zip(axes, FAMILY_TITLES.items(), strict=False):
        for name, result in zip(names, evals, strict=True):
            curve = result.get("curves", {}).get(family)
            if curve:
                steps = sorted(int(s) for s in curve)
                ax.plot(steps, [100 * curve[str(s)] for s in steps], marker="o", label=name)
        ax.set(
            title=f"({'abc'[list(FAMILY_TITLES).index(family)]}) {title}",
            xlabel="attack steps",
            ylabel="accuracy (%)",
        )
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[3].bar(range(len(names)), [100 * e["clean"] for e in evals])
    axes[3].set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    axes[3].set(title="(d) clean", ylabel="accuracy (%)")
    return save_figure(fig, out_stem)


# ---- Figure 3: t-SNE of penultimate features --------------------------------------------------------


def _test_examples(
    config: Any, data_root: str | Path | None, n: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    from ibrar.data import load_split, resolve_data_root
    from ibrar.evaluate import select_subset

    data = load_split(config.data.name, resolve_data_root(config.data.root or data_root), "test")
    idx = select_subset(len(data.labels), min(n, len(data.labels)), seed)
    images = data.images[idx]
    images = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    return images, data.labels[idx].long()


def _check_n(n: int) -> None:
    if not isinstance(n, int) or n < 2:
        raise InputError(f"n: expected an integer >= 2 (number of test examples), got {n!r}")


# What a run folder without its weights may hold instead (the GPU kit computes them where the weights are, and
# only these small files come back): Figure 3's features, Table 5's counts, each with the n and seed they used.
FEATURES_FILE = "tsne-features.npz"
CONFUSION_FILE = "confusion-pgd10.json"


def _saved(run_dir: str | Path, name: str) -> Path | None:
    """run_dir/name when the run folder has it and no weights (with weights, the figure is computed afresh)."""
    folder = Path(run_dir)
    if folder.is_dir() and not (folder / "final.pt").is_file() and (folder / name).is_file():
        return folder / name
    return None


@torch.no_grad()
def penultimate_features(
    run_dir: str | Path, data_root: str | Path | None = None, n: int = 500, seed: int = 0, device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Penultimate-layer features of `n` clean test examples of a trained run, their labels, class names (from
    FEATURES_FILE in a run folder that has no weights, if it holds the same n and seed)."""
    from ibrar.run_folder import load_trained
    from ibrar.taps import tap_layers

    _check_n(n)
    saved = _saved(run_dir, FEATURES_FILE)
    if saved is not None:
        with np.load(saved) as data:
            if int(data["n"]) == n and int(data["seed"]) == seed:
                return data["features"].astype(np.float32), data["labels"], [str(c) for c in data["classes"]]
        raise InputError(f"n: {saved} holds features of other examples than n={n}, seed={seed}; ask for those")
    bundle, config, state = load_trained(run_dir, device=device)
    model = bundle.model
    layer = getattr(model, "penultimate", None) or bundle.ib_layers[-1]
    images, labels = _test_examples(config, data_root, n, seed)
    chunks = []
    with tap_layers(model, [layer]) as feats:
        for i in range(0, len(images), 256):
            model(images[i : i + 256].to(device))
            chunks.append(feats[layer].flatten(1).float().cpu())
    classes = list(state.get("classes") or range(int(labels.max()) + 1))
    return torch.cat(chunks).numpy(), labels.numpy(), [str(c) for c in classes]


def save_features(run_dir: str | Path, data_root: str | Path | None = None, n: int = 500, seed: int = 0,
                  device: str = "cpu") -> Path:
    """FEATURES_FILE in the run folder: `penultimate_features` in fp16 (ample for a t-SNE), with n and seed."""
    feats, labels, classes = penultimate_features(run_dir, data_root, n, seed, device)
    path = Path(run_dir) / FEATURES_FILE
    np.savez_compressed(path, features=feats.astype(np.float16), labels=labels.astype(np.int16),
                        classes=np.array(classes), n=n, seed=seed)
    return path


def plot_tsne(
    run_dirs: Sequence[str | Path],
    out_stem: str | Path,
    data_root: str | Path | None = None,
    n: int = 500,
    seed: int = 0,
    labels: Sequence[str] | None = None,
) -> list[Path]:
    """2-d t-SNE of penultimate features of clean test examples, one colour per class, runs side by side."""
    from sklearn.manifold import TSNE

    dirs = _run_dirs(run_dirs)
    names = _labels(dirs, labels)
    fig, axes = plt.subplots(1, len(dirs), figsize=(4.5 * len(dirs), 4.2), squeeze=False)
    for ax, run_dir, name in zip(axes[0], dirs, names, strict=True):
        feats, ys, classes = penultimate_features(run_dir, data_root, n, seed)
        perplexity = float(min(30.0, max(2.0, (len(feats) - 1) / 3)))
        points = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
            feats
        )
        cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
        for c, cls in enumerate(classes):
            sel = ys == c
            if sel.any():
                ax.scatter(points[sel, 0], points[sel, 1], s=6, color=cmap(c % cmap.N), label=cls)
        ax.set(title=name, xticks=[], yticks=[])
    if len(classes) <= 20:
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
    """Clean and PGD test accuracy per epoch (metrics.jsonl), one panel per run."""
    dirs = _run_dirs(run_dirs)
    names = _labels(dirs, labels)
    fig, axes = plt.subplots(1, len(dirs), figsize=(4.2 * len(dirs), 3.4), squeeze=False, sharey=True)
    for ax, run_dir, name in zip(axes[0], dirs, names, strict=True):
        rows = [r for r in _read_jsonl(run_dir / "metrics.jsonl") if "test_clean_acc" in r]
        epochs = [r["epoch"] for r in rows]
        ax.plot(epochs, [100 * r["test_clean_acc"] for r in rows], marker="o", label="Natural")
        key = _pgd_key(rows)
        if key:
            ax.plot(epochs, [100 * r[key] for r in rows], marker="s", label=f"Adv ({key[5:-4].upper()})")
        ax.set(title=name, xlabel="epoch")
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
    dirs = _run_dirs(run_dirs)
    names = _labels(dirs, labels)
    fig, axes = plt.subplots(1, len(dirs), figsize=(5 * len(dirs), 4.2), squeeze=False)
    for ax, run_dir, name in zip(axes[0], dirs, names, strict=True):
        rows = _read_jsonl(run_dir / "info_plane.jsonl")
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
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise InputError(f"run_dirs: {path} is missing; is {run_dir} a run folder?")
    return float(yaml.safe_load(path.read_text())["ib"]["beta"])


def plot_beta(
    run_dirs: Sequence[str | Path],
    out_stem: str | Path,
    attacks: Sequence[str] | None = None,
    title: str | None = None,
) -> list[Path]:
    """Clean and robust accuracy (eval.json) against the runs' ib.beta, on a log axis."""
    dirs = _run_dirs(run_dirs)
    points = sorted((_beta(d), _read_json(d / "eval.json")) for d in dirs)
    betas = [b for b, _ in points]
    found = [a["name"] for a in points[0][1].get("attacks", [])]
    names = list(attacks) if attacks is not None else found
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.plot(betas, [100 * e["clean"] for _, e in points], marker="o", label="clean")
    for name in names:
        accs = [
            next((a["accuracy"] for a in e.get("attacks", []) if a["name"] == name), None) for _, e in points
        ]
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


def confusion_counts(
    run_dir: str | Path, data_root: str | Path | None = None, n: int = 1000, steps: int = 10, seed: int = 0,
    device: str = "cpu",
) -> tuple[np.ndarray, list[str]]:
    """counts[true, predicted] for PGD-`steps` examples of `n` test examples (the run's eval eps); from
    CONFUSION_FILE in a run folder that has no weights, if it holds the same n, steps and seed."""
    from ibrar.attacks import PGD
    from ibrar.run_folder import load_trained

    _check_n(n)
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps: expected a positive integer, got {steps!r}")
    saved = _saved(run_dir, CONFUSION_FILE)
    if saved is not None:
        data = json.loads(saved.read_text())
        if (data["n"], data["steps"], data["seed"]) == (n, steps, seed):
            return np.array(data["counts"], dtype=np.int64), list(data["classes"])
        raise InputError(f"n: {saved} holds counts of n={data['n']}, steps={data['steps']}, seed={data['seed']}, "
                         f"not n={n}, steps={steps}, seed={seed}; ask for those")
    bundle, config, state = load_trained(run_dir, device=device)
    model = bundle.model
    images, labels = _test_examples(config, data_root, n, seed)
    classes = [str(c) for c in (state.get("classes") or range(int(state.get("num_classes") or 10)))]
    attack = PGD(model, eps=config.eval.eps, alpha=2 / 255, steps=steps, seed=seed)
    counts = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for i in range(0, len(images), 256):
        x, y = images[i : i + 256].to(device), labels[i : i + 256].to(device)
        with torch.no_grad():
            pred = model(attack(x, y)).argmax(1)
        np.add.at(counts, (y.cpu().numpy(), pred.cpu().numpy()), 1)
    return counts, classes


def save_confusion(run_dir: str | Path, data_root: str | Path | None = None, n: int = 1000, steps: int = 10,
                   seed: int = 0, device: str = "cpu") -> Path:
    """CONFUSION_FILE in the run folder: `confusion_counts` with the n, steps and seed it used."""
    counts, classes = confusion_counts(run_dir, data_root, n, steps, seed, device)
    path = Path(run_dir) / CONFUSION_FILE
    path.write_text(json.dumps({"n": n, "steps": steps, "seed": seed, "classes": classes,
                                "counts": counts.tolist()}) + "\n")
    return path


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


def plot_confusion(
    run_dir: str | Path,
    out_stem: str | Path,
    data_root: str | Path | None = None,
    n: int = 1000,
    steps: int = 10,
    top: int = 4,
    seed: int = 0,
) -> list[Path]:
    """Table 5: the top classes PGD examples of each true class are predicted as (markdown), and a heatmap."""
    if not isinstance(top, int) or top < 1:
        raise ValueError(f"top: expected a positive integer, got {top!r}")
    counts, classes = confusion_counts(run_dir, data_root, n, steps, seed)
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


PLOT_KINDS: dict[str, Callable[..., list[Path]]] = {
    "steps": plot_steps,
    "tsne": plot_tsne,
    "convergence": plot_convergence,
    "infoplane": plot_infoplane,
    "beta": plot_beta,
    "confusion": plot_confusion,
}
