"""The one way back from disk to a trained model: a run folder, a checkpoint file or an `ibrar export` folder.

It sits above the checkpoint format (`ibrar.checkpoint`) and the export format (`ibrar.export`), which never import it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ibrar.build import ModelBundle
from ibrar.checkpoint import load_checkpoint_model
from ibrar.config import RunConfig
from ibrar.export import ExportError, is_export, load_export


def load_trained(path: str | Path, device: str | torch.device = "cpu") -> tuple[ModelBundle, RunConfig, dict]:
    """A run folder, checkpoint file or `ibrar export` folder -> the model (mask attached and loaded, eval
    mode), its config and its state (a checkpoint's, or one like it for an export).

    The returned model is self-contained, as RobustBench and the attack libraries expect: it takes images in
    [0, 1], holds its normalisation and its channel mask (submodule `channel_mask`) and returns logits.
    """
    if is_export(path):
        return load_export(path, device=device)
    path = Path(path)
    if path.is_file() and path.suffix == ".safetensors":  # weights alone: the architecture and mask are elsewhere
        where = (f"give the export folder {path.parent}" if is_export(path.parent) else
                 "give the `ibrar export` folder it came from, or evaluate it as your own model with "
                 "`ibrar eval --model MODULE:CALLABLE --weights FILE`")
        raise ExportError(f"{path} holds weights only, without the config that builds the model: {where}")
    return load_checkpoint_model(path, device=device)


def load_pretrained(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """A trained ibrar model from an `ibrar export` folder (or a run folder, or a checkpoint file).

    The model takes images in [0, 1] and returns logits, holds its normalisation and channel mask, and is
    in eval mode: it can be handed unchanged to torchattacks, AutoAttack or `robustbench.eval.benchmark`.
    """
    if not Path(path).exists():
        hint = (f"; if {str(path)!r} is a Hugging Face Hub repository, download it first "
                f"(`hf download {path} --local-dir DIR`) and load DIR") if str(path).count("/") == 1 else ""
        raise ExportError(f"{path} does not exist: give an `ibrar export` folder, a run folder or a checkpoint{hint}")
    return load_trained(path, device=device)[0].model
