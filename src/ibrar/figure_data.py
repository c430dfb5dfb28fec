"""What the figures need from a trained model's weights: Figure 3's penultimate features and Table 5's confusion
of PGD examples, computed beside the evaluation and kept as small files.

The numbers are saved next to the run (`fig3-features.npz`, `table5-confusion.json`) so that `ibrar.plots` can
draw from them without the weights: a GPU lease brings back these files, never a 130 MB checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ibrar.errors import InputError

FEATURES_FILE = "fig3-features.npz"
CONFUSION_FILE = "table5-confusion.json"


@dataclass(frozen=True)
class Features:
    """Penultimate-layer features of clean test examples (n x d), their labels and the class names."""

    features: np.ndarray
    labels: np.ndarray
    classes: list[str]


@dataclass(frozen=True)
class Confusion:
    """counts[true, predicted] of PGD-`steps` examples, and the class names."""

    counts: np.ndarray
    classes: list[str]
    steps: int


def check_n(n: int) -> None:
    if not isinstance(n, int) or n < 2:
        raise InputError(f"n: expected an integer >= 2 (number of test examples), got {n!r}")


def _test_examples(config: Any, data_root: str | Path | None, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The seeded subset of `n` test examples the evaluation uses, as floats in [0, 1]."""
    from ibrar.data import load_split, resolve_data_root
    from ibrar.evaluate import select_subset

    data = load_split(config.data.name, resolve_data_root(config.data.root or data_root), "test")
    idx = select_subset(len(data.labels), min(n, len(data.labels)), seed)
    images = data.images[idx]
    images = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    return images, data.labels[idx].long()


def _class_names(state: dict[str, Any], fallback: int) -> list[str]:
    return [str(c) for c in (state.get("classes") or range(int(state.get("num_classes") or fallback)))]


@torch.no_grad()
def penultimate_features(run_dir: str | Path, data_root: str | Path | None = None, n: int = 500, seed: int = 0,
                         device: str | torch.device = "cpu") -> Features:
    """Penultimate-layer features of `n` clean test examples of a trained run (Figure 3's t-SNE input)."""
    from ibrar.run_folder import load_trained
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
    return Features(torch.cat(chunks).numpy(), labels.numpy(), _class_names(state, int(labels.max()) + 1))


def confusion_counts(run_dir: str | Path, data_root: str | Path | None = None, n: int = 1000, steps: int = 10,
                     seed: int = 0, device: str | torch.device = "cpu") -> Confusion:
    """Where PGD-`steps` examples of `n` test examples land (at the run's eval eps): Table 5's counts."""
    from ibrar.attacks import PGD
    from ibrar.run_folder import load_trained

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
    return Confusion(counts, classes, steps)


def save_features(features: Features, path: str | Path) -> Path:
    """Features as float16 (t-SNE does not need more; 500 x 4096 is then 4 MB), labels, class names."""
    path = Path(path)
    np.savez_compressed(path, features=features.features.astype(np.float16), labels=features.labels,
                        classes=np.array(features.classes))
    return path


def load_features(path: str | Path) -> Features:
    with np.load(path, allow_pickle=False) as data:
        return Features(data["features"].astype(np.float32), data["labels"], [str(c) for c in data["classes"]])


def save_confusion(confusion: Confusion, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(json.dumps({"steps": confusion.steps, "classes": confusion.classes,
                                "counts": confusion.counts.tolist()}, indent=1))
    return path


def load_confusion(path: str | Path) -> Confusion:
    data = json.loads(Path(path).read_text())
    return Confusion(np.array(data["counts"], dtype=np.int64), list(data["classes"]), int(data["steps"]))


def features_of(run_dir: str | Path, data_root: str | Path | None = None, n: int = 500, seed: int = 0) -> Features:
    """The run's saved features when it has them (a run trained elsewhere, e.g. on a lent GPU), else computed."""
    saved = Path(run_dir) / FEATURES_FILE
    return load_features(saved) if saved.is_file() else penultimate_features(run_dir, data_root, n, seed)


def confusion_of(run_dir: str | Path, data_root: str | Path | None = None, n: int = 1000, steps: int = 10,
                 seed: int = 0) -> Confusion:
    """The run's saved confusion counts when it has them, else computed from its weights."""
    saved = Path(run_dir) / CONFUSION_FILE
    return load_confusion(saved) if saved.is_file() else confusion_counts(run_dir, data_root, n, steps, seed)
