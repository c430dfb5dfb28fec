"""The run folder: the names of its files, refusing to mix two runs in one, and reading back what a run wrote
(its config, its checkpoint as a model, its eval.json). `ibrar.loading` is the one entry for loading any model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ibrar.build import ModelBundle, build_model
from ibrar.checkpoint import CheckpointError, find_checkpoint, load_file, load_state
from ibrar.config import RunConfig, build_config, dump_config
from ibrar.errors import IbrarError
from ibrar.folder_lock import LOCK_FILE
from ibrar.run_files import CONFIG_FILE, EVAL_FILE

MASK_MODULE = "channel_mask"  # where a loaded model holds its channel mask


class RunFolderError(IbrarError, ValueError):
    """The output folder cannot be used as asked (another run is there, or nothing to resume)."""


def check_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to mix two runs in one folder (before any work: nothing is touched here)."""
    config_path = run_dir / CONFIG_FILE
    if resume:
        if not config_path.is_file():
            raise RunFolderError(f"--resume {run_dir}: no {CONFIG_FILE} there, so there is no run to resume")
    elif run_dir.exists() and any(p.name != LOCK_FILE for p in run_dir.iterdir()) and not overwrite:
        what = "another run's config" if config_path.is_file() else "files"
        raise RunFolderError(f"output folder {run_dir} already holds {what}; pass --resume {run_dir} to "
                             "continue it, --overwrite to replace it, or --out to choose another folder")


def create_run_dir(run_dir: Path, config: RunConfig, resume: bool) -> None:
    """Clear the folder of a replaced run (only once the new one has started) and write the config.

    On resume the config is written again, so overrides given with --resume hold for later resumes too.
    The folder's write lock (`ibrar.folder_lock`) stays: this process holds it.
    """
    if not resume and run_dir.exists():
        for entry in run_dir.iterdir():
            if entry.name == LOCK_FILE:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG_FILE).write_text(dump_config(config))


def read_run_config(run_dir: Path, overrides: list[str] | None = None) -> RunConfig:
    import yaml

    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise RunFolderError(f"{run_dir}: no {CONFIG_FILE}; is it a run folder written by `ibrar train`?")
    return build_config(yaml.safe_load(path.read_text()), overrides, resolved=True)


def load_checkpoint_model(path: str | Path, device: str | torch.device = "cpu"
                          ) -> tuple[ModelBundle, RunConfig, dict]:
    """A run folder or checkpoint file -> the model (mask attached and loaded, eval mode), its config and the
    checkpoint's state. `ibrar.loading.load_trained` also takes an `ibrar export` folder."""
    file = find_checkpoint(path)
    state = load_file(file, map_location=device)
    if "model" not in state or "config" not in state:
        raise CheckpointError(f"checkpoint {file}: expected the keys 'model' and 'config' written by ibrar train")
    config = build_config(state["config"], resolved=True)
    num_classes = state.get("num_classes") or _classes_from_state(state["model"])
    input_size = int(state.get("input_size") or 32)
    bundle = build_model(config, num_classes, input_size)
    load_state(bundle.model, state["model"], "model", file)
    if bundle.mask is not None and state.get("mask") is not None:
        load_state(bundle.mask, state["mask"], "channel mask", file)
    own_mask(bundle)
    bundle.model.to(device).eval()
    if bundle.mask is not None:  # not a submodule of the model: it moves on its own
        bundle.mask.to(device)
    return bundle, config, state


def own_mask(bundle: ModelBundle) -> None:
    """Make the channel mask a submodule of the model it is hooked into, so that `.to()`, `state_dict()` and
    `copy.deepcopy` carry it (a trained model applies its mask at evaluation; it is part of the network)."""
    if bundle.mask is not None:
        bundle.model.add_module(MASK_MODULE, bundle.mask)


def _classes_from_state(model_state: dict[str, Tensor]) -> int:
    last_bias = [v for k, v in model_state.items() if k.endswith("bias") and v.dim() == 1][-1]
    return int(last_bias.shape[0])


def load_eval(run_dir: str | Path) -> dict[str, Any] | None:
    """The run folder's eval.json, or None when it has not been evaluated."""
    path = Path(run_dir) / EVAL_FILE
    return json.loads(path.read_text()) if path.is_file() else None
