"""Shareable trained models: `ibrar export RUN_DIR OUT_DIR` writes a folder in the Hugging Face Hub's layout
for a PyTorch model, and `load_export` reads it back (`ibrar.loading.load_pretrained` is the user's entry).

The folder holds `model.safetensors` (the weights, channel mask included; never a pickle), `config.json` (what
the loader needs, with the resolved run config), `config.yaml` (the same config as `ibrar train` reads it),
`README.md` (the model card, with the Hub's YAML front matter) and the run's plain-JSON records (`eval.json`,
`metrics.jsonl`, `info_plane.jsonl`, `meta.json`) so that `ibrar eval` and `ibrar plot` accept the folder.
Loading checks the architecture and every tensor's name and shape, and refuses a folder holding pickles.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from ibrar.build import ModelBundle, build_model, ib_layer_names
from ibrar.checkpoint import FINAL, LATEST, CheckpointError, load_checkpoint_model, load_state, own_mask
from ibrar.config import ConfigError, RunConfig, build_config, dump_config
from ibrar.evaluation_record import Evaluation
from ibrar.integrity import record_digest, verify_digest
from ibrar.run_files import CONFIG_FILE, EVAL_FILE, META_FILE, RECORDS
from ibrar.run_folder import RunFolder, training_legs

WEIGHTS_FILE = "model.safetensors"
HUB_CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
EXPORT_FORMAT = "ibrar-export"
FORMAT_VERSION = 1
PICKLE_SUFFIXES = frozenset({".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt", ".tar", ".joblib", ".npy"})
# Hugging Face Hub dataset ids, for the card's `datasets:` field.
HUB_DATASETS = {"cifar10": "uoft-cs/cifar10", "cifar100": "uoft-cs/cifar100", "svhn": "ufldl-stanford/svhn"}
DATASET_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "svhn": "SVHN", "tinyimagenet": "Tiny ImageNet",
                 "imagefolder": "ImageFolder"}


class ExportError(CheckpointError):
    """An export folder that cannot be written or read; the message says why and what to do."""


def is_export(path: str | Path) -> bool:
    """A folder written by `ibrar export` (weights or Hub config, and no training checkpoint)."""
    path = Path(path)
    if not path.is_dir() or (path / FINAL).is_file() or (path / LATEST).is_file():
        return False
    return (path / WEIGHTS_FILE).is_file() or (path / HUB_CONFIG_FILE).is_file()


# ---- writing ------------------------------------------------------------------------------------------


def export_run(run_dir: str | Path, out_dir: str | Path, overwrite: bool = False, name: str | None = None) -> Path:
    """Write the finished run in `run_dir` as a shareable folder `out_dir`; returns `out_dir`."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if not run_dir.is_dir():
        raise ExportError(f"RUN_DIR {run_dir} is not a folder; give the run folder written by `ibrar train`")
    if is_export(run_dir):
        raise ExportError(f"RUN_DIR {run_dir} is an `ibrar export` folder already: share or copy it as it is, or "
                          "export the run folder it came from")
    if not (run_dir / CONFIG_FILE).is_file():
        raise ExportError(f"RUN_DIR {run_dir} holds no run (no {CONFIG_FILE}); give the run folder written by "
                          "`ibrar train`")
    if not (run_dir / FINAL).is_file():
        raise ExportError(f"{run_dir} holds no {FINAL}: export needs a finished run folder "
                          f"(finish an interrupted one with `ibrar train --resume {run_dir}`)")
    if run_dir.resolve().is_relative_to(out_dir.resolve()):
        raise ExportError(f"OUT_DIR {out_dir}: expected a new folder, not the run folder or a folder holding it")
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"OUT_DIR {out_dir} is a file; give the folder the export should be written to")
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise ExportError(f"OUT_DIR {out_dir} already holds files; pass --overwrite to replace them "
                              "or choose another folder")
        if not is_export(out_dir):  # --overwrite replaces an earlier export, never a folder of other files
            raise ExportError(f"OUT_DIR {out_dir} holds files that are not an ibrar export, so --overwrite does "
                              "not delete them; choose another folder")
        shutil.rmtree(out_dir)
    bundle, config, state = load_checkpoint_model(run_dir)  # a run folder with final.pt: never an export
    config = config.model_copy(update={"data": config.data.model_copy(update={"root": None})})
    name = name or config.name
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in bundle.model.state_dict().items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    save_file(tensors, str(out_dir / WEIGHTS_FILE),
              metadata={"format": "pt", "library": "ibrar", "architecture": config.model.name})
    record_digest(out_dir / WEIGHTS_FILE)
    hub_config = _hub_config(bundle, config, state, tensors)
    (out_dir / HUB_CONFIG_FILE).write_text(json.dumps(hub_config, indent=2))
    (out_dir / CONFIG_FILE).write_text(dump_config(config))
    folder = RunFolder(run_dir)
    for record in RECORDS:  # plain JSON, copied as they are (the config was written above without the data root)
        if record not in (CONFIG_FILE, META_FILE, EVAL_FILE) and (run_dir / record).is_file():
            shutil.copyfile(run_dir / record, out_dir / record)
    if (run_dir / EVAL_FILE).is_file():  # its checkpoint path is the file's name only: no local path is shared
        evaluation = json.loads((run_dir / EVAL_FILE).read_text())
        if evaluation.get("checkpoint"):
            evaluation["checkpoint"] = Path(evaluation["checkpoint"]).name
        (out_dir / EVAL_FILE).write_text(json.dumps(evaluation, indent=2))
    if folder.meta_file.is_file():  # without the local data root either: a shared folder names no local path
        meta = folder.meta()
        for leg in training_legs(meta):
            leg.pop("data_root", None)
        (out_dir / META_FILE).write_text(json.dumps(meta, indent=2))
    evaluation = folder.evaluation()
    (out_dir / CARD_FILE).write_text(model_card(name, config, hub_config, evaluation))
    return out_dir


def _hub_config(bundle: ModelBundle, config: RunConfig, state: dict[str, Any],
                tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    from ibrar import __version__

    input_size = int(state.get("input_size") or 32)
    normalize = getattr(bundle.model, "normalize", None)
    return {
        "library_name": "ibrar",
        "format": EXPORT_FORMAT,
        "format_version": FORMAT_VERSION,
        "ibrar_version": __version__,
        "architecture": config.model.name,
        "width": config.model.width,
        "num_classes": int(state.get("num_classes") or 10),
        "input_size": input_size,
        "classes": [str(c) for c in state.get("classes") or []],
        "parameters": sum(p.numel() for p in bundle.model.parameters()),
        "tensors": len(tensors),
        "input": {"shape": [3, input_size, input_size], "range": [0.0, 1.0],
                  "normalization": "inside the model" if isinstance(normalize, nn.Module)
                  and not isinstance(normalize, nn.Identity) else "none"},
        "output": "logits",
        "channel_mask": None if bundle.mask is None else {
            "layer": bundle.last_conv, "rule": config.mask.rule, "applied_at_eval": bool(bundle.mask.at_eval),
            "dropped_channels": bundle.mask.dropped},
        "ib_layers": list(ib_layer_names(config, bundle)) if config.ib.enabled else None,
        "run_config": config.model_dump(mode="json"),
    }


# ---- the model card -----------------------------------------------------------------------------------


def eps_text(eps: float) -> str:
    """8/255 for eps = 8/255 (the field's way of writing L-inf budgets), else the number."""
    steps = eps * 255
    return f"{round(steps)}/255" if abs(steps - round(steps)) < 1e-6 else f"{eps:g}"


def _settings(params: dict[str, Any]) -> str:
    shown = []
    for key, value in params.items():
        if key == "seed":
            continue
        if key == "eps" and isinstance(value, float):
            value = eps_text(value)
        elif isinstance(value, float):
            value = f"{value:g}"
        shown.append(f"{key}={value}")
    return ", ".join(shown) or "-"


def describe_method(config: RunConfig, ib_layers: list[str] | None = None,
                    mask_at_eval: bool | None = None) -> list[str]:
    """The training recipe as card lines: objective, IB-RAR terms, mask (``mask_at_eval``: whether the trained
    model applies it, None: the rule's default), optimizer, data."""
    m, ib, mk, o, t, d = config.method, config.ib, config.mask, config.optim, config.train, config.data
    objective = {"ce": "cross-entropy", "pgd_at": "PGD adversarial training", "trades": "TRADES",
                 "mart": "MART", "vib": "variational information bottleneck"}[m.name]
    lines = [f"- objective: {objective} (`method.name: {m.name}`)"]
    if m.name in ("pgd_at", "trades", "mart"):
        extra = f", beta={m.beta:g}" if m.name in ("trades", "mart") else ""
        lines.append(f"- inner attack: PGD, eps={eps_text(m.eps)}, step={m.alpha:.4g}, steps={m.steps}{extra}")
    if m.name == "vib":
        lines.append(f"- VIB: beta={m.vib_beta:g}, bottleneck dimension {m.vib_dim}")
    if ib.enabled:
        layers = ", ".join(ib_layers or ([ib.layers] if isinstance(ib.layers, str) else ib.layers))
        lines.append(f"- IB-RAR penalty: alpha={ib.alpha:g} (HSIC(X, T)), beta={ib.beta:g} (HSIC(Y, T)) on "
                     f"layers {layers}; estimator {ib.estimator}, label kernel {ib.label_kernel}, sigma={ib.sigma:g}")
    else:
        lines.append("- IB-RAR penalty: off")
    if mk.enabled:
        at_eval = mk.rule == "paper" if mask_at_eval is None else mask_at_eval
        what = (f"drops the {mk.drop_fraction:.0%} least label-informative channels" if mk.rule == "paper"
                else f"official rule ({mk.official_count} channels per refresh)")
        what += ", applied at evaluation" if at_eval else ", training only (not applied at evaluation)"
        lines.append(f"- channel mask: {what}")
    else:
        lines.append("- channel mask: off")
    lines.append(f"- optimizer: SGD, lr={o.lr:g}, momentum={o.momentum:g}, weight decay={o.weight_decay:g}, "
                 f"schedule {o.schedule}; epochs {t.epochs}, batch size {d.batch_size}")
    subset = f"{d.train_subset} training images" if d.train_subset else "the whole training set"
    lines.append(f"- data: {DATASET_NAMES.get(d.name, d.name)}, {subset}, augmentation {'on' if d.augment else 'off'}; "
                 f"seed {config.seed}, profile {config.profile}")
    return lines


def model_card(name: str, config: RunConfig, hub_config: dict[str, Any], evaluation: Evaluation | None) -> str:
    """README.md: the Hub's YAML front matter (library, tags, datasets, metrics, model-index) and the card."""
    dataset = config.data.name
    tags = ["ibrar", "pytorch", "safetensors", "image-classification", "adversarial-robustness",
            config.method.name.replace("_", "-")]
    if config.ib.enabled:
        tags.append("ib-rar")
    front: dict[str, Any] = {"library_name": "ibrar", "tags": tags}
    if dataset in HUB_DATASETS:
        front["datasets"] = [HUB_DATASETS[dataset]]
    front["metrics"] = ["accuracy"]
    front["pipeline_tag"] = "image-classification"
    rows: list[tuple[str, str, float]] = []
    if evaluation:
        rows.append(("clean", "-", evaluation.clean))
        for attack in evaluation.attacks:
            if attack.accuracy is not None:
                rows.append((attack.name, _settings(attack.params), attack.accuracy))
        if len(evaluation.attacks) > 1 and evaluation.worst_case is not None:
            rows.append(("worst case", "per example, over all attacks above", evaluation.worst_case))
        n = evaluation.n
        front["model-index"] = [{"name": name, "results": [{
            "task": {"type": "image-classification", "name": "Image Classification"},
            "dataset": {"name": DATASET_NAMES.get(dataset, dataset), "type": HUB_DATASETS.get(dataset, dataset),
                        "split": "test"},
            "metrics": [{"type": "accuracy", "value": round(100 * acc, 2),
                         "name": f"{label} accuracy" + ("" if label == "clean" else f" ({settings})")
                         + f", {n} test examples"} for label, settings, acc in rows],
        }]}]
    mask = hub_config["channel_mask"]
    lines = ["---", yaml.safe_dump(front, sort_keys=False).rstrip(), "---", "", f"# {name}", "",
             f"A {config.model.name} (width {config.model.width:g}, {hub_config['num_classes']} classes, "
             f"{hub_config['input_size']}x{hub_config['input_size']} inputs, {hub_config['parameters']:,} "
             f"parameters) trained on {DATASET_NAMES.get(dataset, dataset)} with "
             f"ibrar {hub_config['ibrar_version']}"
             + (" and the IB-RAR regularizer (Xu, Perin, Picek: *Information Bottleneck as Regularizer for "
                "Adversarial Robustness*)." if config.ib.enabled else "."),
             "", "## Model", "",
             f"- architecture: `{config.model.name}`, width multiplier {config.model.width:g}",
             "- input: images in [0, 1], shape (N, 3, H, W); normalisation: "
             f"{hub_config['input']['normalization']}",
             "- output: logits only; the loaded model is in eval mode (RobustBench's contract)",
             "- channel mask: " + ("none" if mask is None else
                                   f"on `{mask['layer']}`, {mask['rule']} rule, {len(mask['dropped_channels'])} "
                                   f"channels dropped, applied at evaluation: {mask['applied_at_eval']} "
                                   "(stored with the weights)"),
             "", "## Training", "", *describe_method(config, hub_config.get("ib_layers"),
                                                (hub_config.get("channel_mask") or {}).get("applied_at_eval")), "",
             "The resolved config is `config.yaml` (`ibrar train config.yaml` trains it again).", "",
             "## Evaluation", ""]
    if evaluation:
        lines += [f"{evaluation.n} test examples (subset seed {evaluation.seed}), "
                  f"L-inf budget eps = {eps_text(config.eval.eps)} unless an attack says otherwise.", "",
                  "| attack | settings | accuracy |", "| --- | --- | --- |"]
        lines += [f"| {label} | {settings} | {100 * acc:.2f}% |" for label, settings, acc in rows]
        for warning in evaluation.warnings:
            lines.append(f"\nWarning (possible gradient masking): {warning}")
    else:
        lines.append("Not evaluated: run `ibrar eval RUN_DIR` before exporting to put accuracies here.")
    lines += ["", "## Use", "", "```python", "import ibrar", "",
              'model = ibrar.load_pretrained("PATH/TO/THIS/FOLDER")  # eval mode, [0, 1] in, logits out',
              "```", "",
              "`ibrar eval FOLDER --attacks pgd10,autoattack` evaluates it again; the model goes unchanged into "
              "torchattacks, AutoAttack and `robustbench.eval.benchmark`. The weights are safetensors only: "
              "a folder holding pickles is refused.", ""]
    return "\n".join(lines)


# ---- reading ------------------------------------------------------------------------------------------


def _looks_pickled(path: Path) -> bool:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return True
    with open(path, "rb") as f:
        head = f.read(4)
    # A pickle stream (protocol 2+) starts with PROTO 0x80 and its version; torch.save's format is a zip.
    return (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5) or head.startswith(b"PK\x03\x04")


def check_no_pickles(folder: Path) -> None:
    """Refuse an export that holds pickled files: loading one could run arbitrary code."""
    found = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != WEIGHTS_FILE and _looks_pickled(p))
    if found:
        raise ExportError(f"export {folder} was refused: it holds pickled files {found}, which could run "
                          f"arbitrary code when loaded; an ibrar export keeps its weights only in {WEIGHTS_FILE}. "
                          "Remove those files (or re-export the run) and load again; nothing was loaded")


def _read_hub_config(folder: Path) -> dict[str, Any]:
    path = folder / HUB_CONFIG_FILE
    if not path.is_file():
        raise ExportError(f"export {folder} has no {HUB_CONFIG_FILE}; is it a folder written by `ibrar export`?")
    try:
        hub = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ExportError(f"export {folder}: {HUB_CONFIG_FILE} is not valid JSON ({err})") from None
    if not isinstance(hub, dict) or hub.get("format") != EXPORT_FORMAT:
        raise ExportError(f"export {folder}: {HUB_CONFIG_FILE} does not describe an ibrar export "
                          f"(expected \"format\": \"{EXPORT_FORMAT}\"); write the folder with `ibrar export`")
    if int(hub.get("format_version", 0)) > FORMAT_VERSION:
        raise ExportError(f"export {folder}: format version {hub['format_version']} is newer than this ibrar "
                          f"reads ({FORMAT_VERSION}); upgrade ibrar")
    return hub


def _read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    if not path.is_file():
        raise ExportError(f"export {path.parent} has no {WEIGHTS_FILE}; re-export the run with `ibrar export`")
    verify_digest(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as err:  # safetensors raises its own error types for a file of another format
        raise ExportError(f"export {path.parent}: {WEIGHTS_FILE} is not a valid safetensors file ({err}); "
                          "an ibrar export holds its weights only as safetensors (a pickle is never loaded). "
                          "Re-export the run with `ibrar export`") from None
    return tensors, metadata


def load_export(path: str | Path, device: str | torch.device = "cpu") -> tuple[ModelBundle, RunConfig, dict]:
    """An export folder -> (the model with its mask, eval mode; its run config; a state like final.pt's)."""
    folder = Path(path)
    check_no_pickles(folder)
    hub = _read_hub_config(folder)
    tensors, metadata = _read_weights(folder / WEIGHTS_FILE)
    try:
        config = build_config(hub.get("run_config"), resolved=True)  # its profile was applied at training
    except ConfigError as err:
        raise ExportError(f"export {folder}: the run config in {HUB_CONFIG_FILE} is invalid ({err})") from None
    stored = metadata.get("architecture")
    if stored is not None and stored != hub.get("architecture"):
        raise ExportError(f"export {folder}: the weights are of architecture {stored!r} but {HUB_CONFIG_FILE} "
                          f"says {hub.get('architecture')!r}; the two files come from different exports")
    if hub.get("architecture") != config.model.name:
        raise ExportError(f"export {folder}: {HUB_CONFIG_FILE} names architecture {hub.get('architecture')!r} "
                          f"but its run config builds {config.model.name!r}")
    num_classes, input_size = int(hub.get("num_classes") or 10), int(hub.get("input_size") or 32)
    bundle = build_model(config, num_classes, input_size)
    own_mask(bundle)
    load_state(bundle.model, tensors, f"{config.model.name} model (with its channel mask)", folder / WEIGHTS_FILE)
    bundle.model.to(device).eval()
    state = {"config": hub.get("run_config"), "num_classes": num_classes, "input_size": input_size,
             "classes": hub.get("classes") or None}
    return bundle, config, state

