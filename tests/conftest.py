"""Shared fixtures: a small, learnable dataset written in the real ImageFolder on-disk format."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

CLASSES = ["circle", "cross", "stripes", "square"]


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """The test models are tiny: one thread avoids oversubscribing a shared 2-core machine (many times faster)."""
    torch.set_num_threads(1)


def write_image_folder(root: Path, per_class_train: int = 24, per_class_test: int = 8, size: int = 32,
                       seed: int = 0) -> Path:
    """train/<class>/*.png and test/<class>/*.png: each class a colour tint plus noise, so it can be learnt."""
    rng = np.random.default_rng(seed)
    tints = rng.uniform(0.2, 0.8, size=(len(CLASSES), 3))
    for split, count in (("train", per_class_train), ("test", per_class_test)):
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                img = tints[c] + 0.15 * rng.standard_normal((size, size, 3))
                img[c * size // 4 : (c + 1) * size // 4] += 0.2  # a class-specific band
                pixels = (np.clip(img, 0, 1) * 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:04d}.png")
    return root


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("imagefolder"))


def tiny_config(data_root: Path, **sections) -> dict:
    """A config dict for a seconds-long CPU run on `image_folder`."""
    config = {
        "name": "tiny",
        "device": "cpu",
        "seed": 0,
        "model": {"name": "small_cnn", "width": 0.5},
        "data": {"name": "imagefolder", "root": str(data_root), "batch_size": 16},
        "method": {"name": "ce"},
        "optim": {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.0},
        "train": {"epochs": 2, "eval_subset": 16, "eval_pgd_steps": 2, "info_plane_every": 3},
        "eval": {"attacks": [], "n": 16},
    }
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    return config
