"""RobustBench interop: evaluate a RobustBench zoo model that is on disk with ibrar's attacks, and write an
evaluation as a RobustBench model card (`model_info/<dataset>/<threat_model>/<name>.json`).

The other direction needs no code here: every ibrar model takes images in [0, 1], returns logits, holds its
normalisation (and channel mask) inside, and a loaded one is in eval mode, so `robustbench.eval.benchmark`
accepts it unchanged. RobustBench is an optional dependency (`pip install 'ibrar[robustbench]'`).
"""

from __future__ import annotations

import difflib
import importlib
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from ibrar.build import ModelBundle
from ibrar.config import RunConfig, build_config
from ibrar.errors import InputError
from ibrar.evaluation_record import Evaluation
from ibrar.export import eps_text

DATASETS = ("cifar10", "cifar100")  # the RobustBench datasets ibrar reads
THREAT_MODEL = "Linf"  # ibrar's attacks (but CW) are L-inf
NUM_CLASSES = {"cifar10": 10, "cifar100": 100}
CARD_FIELDS = ("link", "name", "authors", "additional_data", "number_forward_passes", "dataset", "venue",
               "architecture", "eps", "clean_acc", "reported", "autoattack_acc", "footnote", "unreliable")


class RobustBenchError(InputError):
    """RobustBench is missing, or a zoo model or card cannot be used as asked; the message says what to do."""


def import_robustbench() -> ModuleType:
    """`robustbench` with `robustbench.utils` and `robustbench.eval` imported.

    RobustBench 1.1.1 imports AutoAttack as `autoattack` (fra31/auto-attack's repository, which is not on PyPI)
    while the package it depends on, pyautoattack, installs the same attacks as `pyautoattack` with a
    slightly different signature. When no `autoattack` is installed, that name is registered as a thin adapter
    over pyautoattack (see `_autoattack_adapter`), so that `robustbench.eval.benchmark` runs.
    """
    try:
        importlib.import_module("autoattack")
    except ImportError:
        try:
            _autoattack_adapter()
        except ImportError:
            pass  # robustbench's own import below then names what is missing
    try:
        robustbench = importlib.import_module("robustbench")
        importlib.import_module("robustbench.utils")
        importlib.import_module("robustbench.eval")
    except ImportError as err:
        raise RobustBenchError(f"RobustBench cannot be imported ({err}); install it with "
                               "`pip install 'ibrar[robustbench]'`") from None
    return robustbench


def _autoattack_adapter() -> ModuleType:
    """Register `autoattack` and `autoattack.state`: pyautoattack's AutoAttack with the repository's
    constructor (`attacks_to_run`, `verbose`, `log_path`) and `run_standard_evaluation(x, y, bs=...) -> x_adv`."""
    base = importlib.import_module("pyautoattack")
    state = importlib.import_module("pyautoattack.state")

    class AutoAttack(base.AutoAttack):
        def __init__(self, model: nn.Module, norm: str = "Linf", eps: float = 0.3, seed: int | None = None,
                     verbose: bool = True, attacks_to_run: Sequence[str] = (), version: str = "standard",
                     device: str | torch.device = "cuda", log_path: str | None = None, **_: Any) -> None:
            super().__init__(model, attacks=list(attacks_to_run) or None, device=device, eps=eps, norm=norm,
                             seed=seed, version=version)
            self.verbose = verbose

        def run_standard_evaluation(self, x_orig: torch.Tensor, y_orig: torch.Tensor, bs: int = 250,
                                    return_labels: bool = False, state_path: Path | None = None,
                                    **_: Any) -> Any:
            x_adv, y_adv = super().run_standard_evaluation(x_orig, y_orig, batch_size=bs, state_path=state_path)
            return (x_adv, y_adv) if return_labels else x_adv

    module = ModuleType("autoattack", "pyautoattack under fra31/auto-attack's name (registered by ibrar)")
    module.AutoAttack = AutoAttack  # type: ignore[attr-defined]
    module.state = state  # type: ignore[attr-defined]
    sys.modules["autoattack"] = module
    sys.modules["autoattack.state"] = state
    return module


def zoo_model_path(name: str, model_dir: str | Path, dataset: str = "cifar10",
                   threat_model: str = THREAT_MODEL) -> Path:
    """Where RobustBench's `load_model` keeps (and looks for) a zoo model's weights."""
    return Path(model_dir) / dataset / threat_model / f"{name}.pt"


def load_zoo_model(name: str, model_dir: str | Path, dataset: str = "cifar10", threat_model: str = THREAT_MODEL,
                   device: str | torch.device = "cpu") -> nn.Module:
    """A RobustBench zoo model whose weights are already under `model_dir` (nothing is downloaded)."""
    if dataset not in DATASETS:
        raise RobustBenchError(f"--dataset: expected one of {list(DATASETS)} (the test sets ibrar reads), "
                               f"got {dataset!r}")
    if threat_model != THREAT_MODEL:
        raise RobustBenchError(f"--threat-model: ibrar's attacks are L-inf, so only {THREAT_MODEL} zoo models are "
                               f"evaluated here, got {threat_model!r}; use robustbench.eval.benchmark for others")
    import_robustbench()
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel
    from robustbench.utils import load_model

    zoo = model_dicts[BenchmarkDataset(dataset)][ThreatModel(threat_model)]
    if name not in zoo:
        close = difflib.get_close_matches(name, list(zoo), n=3)
        raise RobustBenchError(f"--robustbench: {name!r} is not a RobustBench {dataset}/{threat_model} model"
                               + (f"; did you mean {close}?" if close else ""))
    path = zoo_model_path(name, model_dir, dataset, threat_model)
    ensemble = isinstance(zoo[name].get("gdrive_id"), list)
    expected = [Path(f"{path}_m{i}.pt") for i in range(len(zoo[name]["gdrive_id"]))] if ensemble else [path]
    missing = [p for p in expected if not p.is_file()]
    if missing:
        raise RobustBenchError(
            f"--model-dir: {missing[0]} does not exist; ibrar never downloads a model. Fetch it once with "
            f"`python -c \"from robustbench.utils import load_model; load_model('{name}', model_dir='{model_dir}', "
            f"dataset='{dataset}', threat_model='{threat_model}')\"`, then run again")
    model = load_model(name, model_dir=str(model_dir), dataset=dataset, threat_model=threat_model)
    return model.to(device).eval()


def evaluate_zoo_model(name: str, model_dir: str | Path, out_dir: str | Path, dataset: str = "cifar10",
                       threat_model: str = THREAT_MODEL, eps: float = 8 / 255, **kwargs: Any) -> str:
    """`ibrar eval --robustbench NAME`: the zoo model through ibrar's attacks; eval.json goes to `out_dir`."""
    from ibrar.build import resolve_device
    from ibrar.run_eval import evaluate_run

    attacks = kwargs.get("attacks") or ()
    adaptive = [a for a in attacks if a.startswith("adaptive")]
    if adaptive:
        raise RobustBenchError(f"--attacks: {adaptive} maximise an ibrar run's own IB-RAR loss, which a "
                               "RobustBench model does not have; choose other attacks")
    device = resolve_device(kwargs.pop("device", "auto"))
    model = load_zoo_model(name, model_dir, dataset, threat_model, device=device)
    config = build_config({"name": name, "data": {"name": dataset}, "eval": {"eps": eps, "attacks": []}})
    loaded = (ModelBundle(model, (), (), None), config, {"num_classes": NUM_CLASSES[dataset]})
    return evaluate_run(zoo_model_path(name, model_dir, dataset, threat_model), loaded=loaded, out_dir=out_dir,
                        device=str(device), **kwargs)


# ---- model cards --------------------------------------------------------------------------------------


def autoattack_accuracy(result: Evaluation) -> tuple[float, dict[str, Any]]:
    """The AutoAttack accuracy of an eval.json (the attack named `autoattack`) and that attack's parameters."""
    found = result.attack("autoattack")
    if found is not None and found.accuracy is not None:
        return found.accuracy, dict(found.params)
    raise RobustBenchError("a RobustBench card needs an AutoAttack accuracy, and this evaluation has none "
                           "(no attack named 'autoattack'); evaluate with --attacks autoattack")


def robustbench_card(result: Evaluation, config: RunConfig, architecture: str,
                     fields: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A RobustBench model card (the fields of its `model_info` JSON files) for an evaluation."""
    from ibrar import __version__

    robust, params = autoattack_accuracy(result)
    eps = params.get("eps") if isinstance(params.get("eps"), float) else config.eval.eps
    n = result.n
    footnote = f"Evaluated with ibrar {__version__} on {n} test examples (the leaderboard uses 10,000)."
    card: dict[str, Any] = {
        "link": None, "name": None, "authors": None,
        "additional_data": False,
        "number_forward_passes": 1,
        "dataset": config.data.name,
        "venue": None,
        "architecture": architecture,
        "eps": eps_text(eps),
        "clean_acc": f"{100 * result.clean:.2f}",
        "reported": f"{100 * robust:.2f}",
        "autoattack_acc": f"{100 * robust:.2f}",
        "footnote": footnote,
        "unreliable": bool(result.warnings),
    }
    for key, value in (fields or {}).items():
        if key not in CARD_FIELDS:
            raise RobustBenchError(f"--card-field: unknown key {key!r}; RobustBench cards hold {list(CARD_FIELDS)}")
        card[key] = value
    return card


def check_card_request(name: str, attacks: Sequence[str] | None, card_fields: list[str]) -> None:
    """What `--robustbench-card NAME` needs, checked before the evaluation runs rather than after it: a name
    usable as a file name, valid `--card-field`s, and the autoattack attack (`attacks` None: the defaults)."""
    check_card_name(name)
    parse_card_fields(card_fields)
    if attacks is not None and "autoattack" not in attacks:
        raise RobustBenchError(f"--robustbench-card: a RobustBench card needs an AutoAttack accuracy, and --attacks "
                               f"{','.join(attacks)} has no autoattack; evaluate with --attacks autoattack (or add "
                               "it to the list)")


def check_card_name(name: str) -> None:
    if not name or "/" in name or name.startswith("."):
        raise RobustBenchError(f"--robustbench-card: expected a model name usable as a file name, got {name!r}")


def card_path(name: str, dataset: str, root: str | Path = ".", threat_model: str = THREAT_MODEL) -> Path:
    """`root/model_info/<dataset>/<threat_model>/<name>.json`, RobustBench's layout."""
    check_card_name(name)
    return Path(root) / "model_info" / dataset / threat_model / f"{name}.json"


def write_robustbench_card(card: Mapping[str, Any], name: str, root: str | Path = ".",
                           threat_model: str = THREAT_MODEL) -> Path:
    """Write `root/model_info/<dataset>/<threat_model>/<name>.json`, RobustBench's layout; returns the path."""
    path = card_path(name, str(card["dataset"]), root, threat_model)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(card), indent=2) + "\n")
    return path


def parse_card_fields(items: list[str]) -> dict[str, Any]:
    """['name=My model', 'additional_data=true'] -> {'name': 'My model', 'additional_data': True}."""
    import yaml

    fields: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise RobustBenchError(f"--card-field {item!r}: expected KEY=VALUE, e.g. name=\"My paper\"")
        key = key.strip()
        if key not in CARD_FIELDS:
            raise RobustBenchError(f"--card-field: unknown key {key!r}; RobustBench cards hold {list(CARD_FIELDS)}")
        value: Any = raw
        if key in ("additional_data", "unreliable", "number_forward_passes"):
            value = yaml.safe_load(raw)
        fields[key] = value
    return fields
