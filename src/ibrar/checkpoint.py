"""Checkpoints that are safe to load and never half-written, and the trained model a checkpoint holds.

Everything is loaded with `torch.load(weights_only=True)`: a file holding pickled objects (a malicious
checkpoint) is refused, never executed. Writes go to a temporary file that is renamed into place, so a
kill during a write leaves the previous checkpoint intact, and each write records the file's sha256
(`ibrar.integrity`), checked before every load: a flipped byte is an error, never a silent evaluation.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ibrar.build import ModelBundle, build_model
from ibrar.config import RunConfig, build_config
from ibrar.errors import IbrarError
from ibrar.integrity import replace_verified, verify_digest
from ibrar.run_files import CHECKPOINT_FILE, FINAL_FILE

LATEST = CHECKPOINT_FILE  # the names are the run folder's (`ibrar.run_files`); these are the short ones used here
FINAL = FINAL_FILE
EXPORTED = "model.safetensors"  # the weights of an `ibrar export` folder
MASK_MODULE = "channel_mask"  # where a loaded model holds its channel mask


class CheckpointError(IbrarError, ValueError):
    """A checkpoint that cannot be used; the message says why and what to do."""


def save_atomic(obj: dict[str, Any], path: str | Path) -> None:
    """torch.save to a temporary file in the same folder, flush it to disk, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        replace_verified(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_file(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with weights_only=True; refuse pickled objects and report corrupt files clearly."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    verify_digest(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch's note on the pickle protocol of odd files
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        detail = _unpickler_detail(err)
        if "global" in detail.lower():
            raise CheckpointError(
                f"checkpoint {path} was refused: it holds pickled Python objects, which could run arbitrary "
                f"code when loaded, so it is not loaded (weights_only=True). Detail: {detail}. "
                "Re-save only tensors and plain values (a state_dict) from a trusted source."
            ) from None
        raise CheckpointError(
            f"checkpoint {path} was refused: it is not a file written by torch.save, or it is corrupt, "
            f"and it was not unpickled (weights_only=True). Detail: {detail}. Use an earlier checkpoint "
            "or re-run the training"
        ) from None
    except Exception as err:  # a damaged zip or pickle stream fails in many ways (KeyError, IndexError, ...)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated and cannot be read ({first}); "
                              "use an earlier checkpoint or re-run the training") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path}: expected a dict of states, got {type(obj).__name__}")
    return obj


def _unpickler_detail(err: Exception) -> str:
    """The one useful line of torch's long weights_only message (what the unpickler refused)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if line.startswith("WeightsUnpickler error:"):
            rest = line.removeprefix("WeightsUnpickler error:").strip()
            return rest or (lines[i + 1] if i + 1 < len(lines) else "")
    return lines[0] if lines else type(err).__name__


def load_state(module: nn.Module, state: Any, what: str, path: str | Path) -> None:
    """load_state_dict with a clear message when the architecture or the number of classes differs."""
    if not isinstance(state, Mapping) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise CheckpointError(f"checkpoint {path}: the {what} state is not a mapping of parameter names to "
                              f"tensors (got {type(state).__name__}); was it written by ibrar train?")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        own = module.state_dict()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in own if k in state and state[k].shape != own[k].shape]
        detail = "; ".join(filter(None, [
            f"missing keys {missing[:5]}" if missing else "",
            f"unexpected keys {unexpected[:5]}" if unexpected else "",
            f"shape mismatches {shapes[:5]}" if shapes else "",
        ])) or str(err).splitlines()[0]
        raise CheckpointError(f"checkpoint {path}: the {what} does not match the configured one ({detail}); "
                              "check the model name, width and number of classes") from None


def find_checkpoint(path: str | Path) -> Path:
    """A run folder -> its final weights (or the latest checkpoint); an export -> its weights; a file -> itself."""
    path = Path(path)
    if path.is_dir():
        for name in (FINAL, LATEST, EXPORTED):
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"{path} holds no {FINAL} or {LATEST}; "
                              "is it a run folder written by `ibrar train`?")
    if path.is_file():
        return path
    raise CheckpointError(f"{path} does not exist: give a run folder or a checkpoint file")


def training_state(model: nn.Module, mask: nn.Module | None, optimizer: torch.optim.Optimizer, scheduler: Any,
                   counters: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """Everything a run needs to continue exactly: weights, mask, optimizer, schedule, counters, random state."""
    return {
        "model": model.state_dict(),
        "mask": mask.state_dict() if mask is not None else None,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        **counters,
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "config": dict(config),
    }


def restore_training_state(path: Path, model: nn.Module, mask: nn.Module | None, optimizer: torch.optim.Optimizer,
                           scheduler: Any, device: torch.device) -> dict[str, Any]:
    """Load `path` (written from `training_state`) into the objects and the random state; return the file's
    other entries (the counters)."""
    state = load_file(path, map_location=device)
    load_state(model, state["model"], "model", path)
    if mask is not None and state.get("mask") is not None:
        load_state(mask, state["mask"], "channel mask", path)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng_cpu"].cpu())
    if state.get("rng_cuda") and torch.cuda.is_available():  # map_location moved them: RNG states live on the CPU
        torch.cuda.set_rng_state_all([s.cpu() for s in state["rng_cuda"]])
    return state


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
