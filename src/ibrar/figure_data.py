"""What the figures need from a trained model's weights: Figure 3's penultimate features and Table 5's confusion
of PGD examples, computed beside the evaluation and kept as small files.

The numbers are saved next to the run (`tsne-features.npz`, `confusion-pgd10.json`, each with the examples it
used) so that `ibrar.plots` can draw from them without the weights: a GPU lease brings back these files, never a
130 MB checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ibrar.errors import InputError
from ibrar.run_files import CONFUSION_FILE, FEATURES_FILE
from ibrar.run_folder import RunFolder


@dataclass(frozen=True)
class Features:
    """Penultimate-layer features of clean test examples (n x d), their labels and the class names; `n` and
    `seed` name the seeded subset of the test set they are of."""

    features: np.ndarray
    labels: np.ndarray
    classes: list[str]
    n: int
    seed: int


@dataclass(frozen=True)
class Confusion:
    """counts[true, predicted] of PGD-`steps` examples of the seeded subset (`n`, `seed`), and the class names."""

    counts: np.ndarray
    classes: list[str]
    steps: int
    n: int
    seed: int


def check_n(n: int) -> None:
    if not isinstance(n, int) or n < 2:
        raise InputError(f"n: expected an integer >= 2 (number of test examples), got {n!r}")


def _test_examples(config: Any, data_root: str | Path | None, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The seeded subset of `n` test examples the evaluation uses, as floats in [0, 1]."""
    from ibrar.data import load_split, resolve_data_root
    from ibrar.evaluate import evaluation_examples

    # a data root given here beats the run's data.root, as in `ibrar eval`: a run whose data moved is still read
    data = load_split(config.data.name, resolve_data_root(data_root or config.data.root), "test")
    _, images, labels = evaluation_examples(data.images, data.labels, min(n, len(data.labels)), seed, "cpu")
    return images, labels


def _class_names(state: dict[str, Any], fallback: int) -> list[str]:
    return [str(c) for c in (state.get("classes") or range(int(state.get("num_classes") or fallback)))]


@torch.no_grad()
def penultimate_features(run_dir: str | Path, data_root: str | Path | None = None, n: int = 500, seed: int = 0,
                         device: str | torch.device = "cpu") -> Features:
    """Penultimate-layer features of `n` clean test examples of a trained run (Figure 3's t-SNE input)."""
    from ibrar.loading import load_trained
    from ibrar.taps import tap_layers

    check_n(n)
    bundle, config, state = load_trained(run_dir, device=device)
    model = bundle.model
    layer = getattr(model, "penultimate", None) or bundle.ib_layers[-1]
    images, labels = _test_examples(config, data_root, n, seed)
    chunks = []
    with tap_layers(model, [layer]) as feats:
        for i in range(0, len(images), 256):
            model(images[i : i + 256].to(device))
            chunks.append(feats[layer].flatten(1).float().cpu())
    return Features(torch.cat(chunks).numpy(), labels.numpy(), _class_names(state, int(labels.max()) + 1), n, seed)


def confusion_counts(run_dir: str | Path, data_root: str | Path | None = None, n: int = 1000, steps: int = 10,
                     seed: int = 0, device: str | torch.device = "cpu") -> Confusion:
    """Where PGD-`steps` examples of `n` test examples land (at the run's eval eps): Table 5's counts."""
    from ibrar.attacks import PGD
    from ibrar.loading import load_trained

    check_n(n)
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps: expected a positive integer, got {steps!r}")
    bundle, config, state = load_trained(run_dir, device=device)
    model = bundle.model
    images, labels = _test_examples(config, data_root, n, seed)
    classes = _class_names(state, 10)
    attack = PGD(model, eps=config.eval.eps, alpha=2 / 255, steps=steps, seed=seed)
    counts = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for i in range(0, len(images), 256):
        x, y = images[i : i + 256].to(device), labels[i : i + 256]
        with torch.no_grad():
            pred = model(attack(x, y.to(device))).argmax(1).cpu()
        np.add.at(counts, (y.numpy(), pred.numpy()), 1)
    return Confusion(counts, classes, steps, n, seed)


def save_features(features: Features, path: str | Path) -> Path:
    """Features as float16 (t-SNE does not need more; 500 x 4096 is then 4 MB), labels, class names, n, seed."""
    path = Path(path)
    np.savez_compressed(path, features=features.features.astype(np.float16), labels=features.labels.astype(np.int16),
                        classes=np.array(features.classes), n=features.n, seed=features.seed)
    return path


def load_features(path: str | Path) -> Features:
    with np.load(path, allow_pickle=False) as data:
        return Features(data["features"].astype(np.float32), data["labels"].astype(np.int64),
                        [str(c) for c in data["classes"]], int(data["n"]), int(data["seed"]))


def save_confusion(confusion: Confusion, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(json.dumps({"n": confusion.n, "steps": confusion.steps, "seed": confusion.seed,
                                "classes": confusion.classes, "counts": confusion.counts.tolist()}) + "\n")
    return path


def load_confusion(path: str | Path) -> Confusion:
    data = json.loads(Path(path).read_text())
    return Confusion(np.array(data["counts"], dtype=np.int64), list(data["classes"]), int(data["steps"]),
                     int(data["n"]), int(data["seed"]))


def _use_saved(run_dir: str | Path, name: str, wanted: dict[str, int], have: dict[str, int]) -> bool:
    """Whether to use the saved file: always when it is of the examples asked for; never when the run has weights
    to compute them afresh; otherwise an error naming what the file holds."""
    if have == wanted:
        return True
    if RunFolder(run_dir).final_file.is_file():
        return False
    raise InputError(f"n: {Path(run_dir) / name} holds {have}, not {wanted}, and the run has no weights to compute "
                     "those; ask for what the file holds")


def features_of(run_dir: str | Path, data_root: str | Path | None = None, n: int = 500, seed: int = 0) -> Features:
    """The run's saved features (a run trained elsewhere, e.g. on a lent GPU) when they are of these examples,
    else computed from its weights."""
    saved = RunFolder(run_dir).features_file
    if saved.is_file():
        features = load_features(saved)
        if _use_saved(run_dir, FEATURES_FILE, {"n": n, "seed": seed}, {"n": features.n, "seed": features.seed}):
            return features
    return penultimate_features(run_dir, data_root, n, seed)


def confusion_of(run_dir: str | Path, data_root: str | Path | None = None, n: int = 1000, steps: int = 10,
                 seed: int = 0) -> Confusion:
    """The run's saved confusion counts when they are of these examples, else computed from its weights."""
    saved = RunFolder(run_dir).confusion_file
    if saved.is_file():
        confusion = load_confusion(saved)
        have = {"n": confusion.n, "steps": confusion.steps, "seed": confusion.seed}
        if _use_saved(run_dir, CONFUSION_FILE, {"n": n, "steps": steps, "seed": seed}, have):
            return confusion
    return confusion_counts(run_dir, data_root, n, steps, seed)
