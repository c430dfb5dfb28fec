"""Any PyTorch classifier into ibrar's evaluation: built from ``MODULE:CALLABLE``, its weights read safely, its
output checked (logits, not probabilities, not a tuple or a dict), then evaluated as an ibrar run is.

``ibrar eval --model torchvision.models:resnet18 --model-kwargs '{"num_classes": 10}' --weights r18.safetensors
--normalize 0.4914,0.4822,0.4465/0.2471,0.2435,0.2616 --dataset cifar10`` and, from Python,
``ibrar.evaluate_model(model, dataset="cifar10")``. The contract is RobustBench's: the model takes images in
[0, 1] and returns logits; a normalisation it does not hold itself is added in front (``normalize``).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ibrar.modes import eval_mode
from ibrar.user_callable import ModelSpecError, build_module

Normalization = tuple[Sequence[float], Sequence[float]]
_PROBABILITY_TOLERANCE = 1e-4


class Normalized(nn.Module):
    """``model((x - mu) / sigma)``: a model that expects normalised input, given [0, 1] images (RobustBench's
    layout: the constants are buffers named ``mu`` and ``sigma``)."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std) or not mean or any(s <= 0 for s in std):
            raise ModelSpecError(f"--normalize: expected as many means as stds (> 0), got {list(mean)} and "
                                 f"{list(std)}")
        self.model = model
        self.register_buffer("mu", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("sigma", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.model((x - self.mu) / self.sigma)


class SelectOutput(nn.Module):
    """The logits out of a model that returns a tuple (``index``) or a dict (``key``)."""

    def __init__(self, model: nn.Module, pick: int | str) -> None:
        super().__init__()
        self.model, self.pick = model, pick

    def forward(self, x: Tensor) -> Tensor:
        out = self.model(x)
        try:
            return out[self.pick]
        except (KeyError, IndexError, TypeError):
            raise ModelSpecError(f"--output {self.pick!r}: the model's output ({type(out).__name__}) has no such "
                                 "entry") from None


def parse_normalize(text: str) -> Normalization:
    """``"0.49,0.48,0.45/0.25,0.24,0.26"`` -> ((0.49, 0.48, 0.45), (0.25, 0.24, 0.26))."""
    mean, sep, std = text.partition("/")
    try:
        parsed = tuple(float(v) for v in mean.split(",")), tuple(float(v) for v in std.split(","))
    except ValueError:
        parsed = ()
    if not sep or not parsed:
        raise ModelSpecError(f"--normalize: expected MEAN/STD with comma-separated values per channel, e.g. "
                             f"0.4914,0.4822,0.4465/0.2471,0.2435,0.2616, got {text!r}")
    return parsed


def parse_output(text: str | None) -> int | str | None:
    """``--output``: an int picks a tuple's entry, anything else a dict's key."""
    if text is None:
        return None
    return int(text) if text.lstrip("-").isdigit() else text


def read_weights(path: str | Path) -> dict[str, Tensor]:
    """A state dict from a safetensors file or a ``torch.save`` file, read without running pickled code."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelSpecError(f"--weights: {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:  # safetensors has its own error types for a file of another format
            raise ModelSpecError(f"--weights: {path} is not a valid safetensors file ({err})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # weights_only refuses pickled objects other than tensors and plain containers
        raise ModelSpecError(f"--weights: {path} cannot be read as a state dict with weights_only=True ({err}); "
                             "save `model.state_dict()` (or use safetensors)") from None
    for key in ("state_dict", "model_state_dict", "model"):  # a training checkpoint that holds one
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ModelSpecError(f"--weights: {path} holds no state dict of tensors; save `model.state_dict()`")
    return state


def load_weights(model: nn.Module, state: Mapping[str, Tensor]) -> None:
    """Load ``state`` strictly (a ``module.`` prefix from DistributedDataParallel is dropped)."""
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise ModelSpecError(f"--weights do not fit the model: missing {missing[:5]}{'...' if len(missing) > 5 else ''}"
                             f", unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}; check "
                             "--model and --model-kwargs (e.g. num_classes)")
    try:
        model.load_state_dict(state)
    except RuntimeError as err:  # a shape mismatch
        raise ModelSpecError(f"--weights do not fit the model ({str(err).splitlines()[-1].strip()}); check "
                             "--model-kwargs (e.g. num_classes)") from None


def build_user_model(spec: str, weights: str | Path | None = None, kwargs: Mapping[str, Any] | str | None = None,
                     normalize: Normalization | str | None = None, output: int | str | None = None) -> nn.Module:
    """``spec`` called with ``kwargs`` (a dict or a JSON object), ``weights`` loaded into it, wrapped to select
    ``output`` and to apply ``normalize``; returned in eval mode."""
    if isinstance(kwargs, str):
        try:
            kwargs = json.loads(kwargs)
        except json.JSONDecodeError as err:
            raise ModelSpecError(f"--model-kwargs: expected a JSON object such as '{{\"num_classes\": 10}}' "
                                 f"({err})") from None
    if kwargs is not None and not isinstance(kwargs, dict):
        raise ModelSpecError(f"--model-kwargs: expected a JSON object, got {kwargs!r}")
    model = build_module(spec, kwargs or {})
    if weights is not None:
        load_weights(model, read_weights(weights))
    if output is not None:
        model = SelectOutput(model, output)
    if isinstance(normalize, str):
        normalize = parse_normalize(normalize)
    if normalize is not None:
        model = Normalized(model, *normalize)
    return model.eval()


def check_model(model: nn.Module, x: Tensor, num_classes: int | None = None) -> list[str]:
    """Check ``model``'s output on the batch ``x`` (in [0, 1]): an error for anything but one logits tensor per
    image, and warnings (returned) for outputs that look like probabilities. The mode is left as found."""
    normalized = next((m for m in model.modules() if isinstance(m, Normalized)), None)
    if normalized is not None and normalized.mu.shape[1] != x.shape[1]:
        raise ModelSpecError(f"--normalize gives {normalized.mu.shape[1]} means and stds, the images have "
                             f"{x.shape[1]} channels; give one mean and one std per channel")
    try:
        with torch.no_grad(), eval_mode(model):
            out = model(x)
    except RuntimeError as err:  # a shape or dtype the model cannot take
        raise ModelSpecError(f"the model fails on a batch of the test images shaped {tuple(x.shape)} "
                             f"({x.dtype}): {str(err).splitlines()[0]}; check that --model builds it for this "
                             "dataset's image size and channels") from None
    if isinstance(out, (tuple, list)):
        raise ModelSpecError(f"the model returns a {type(out).__name__} of {len(out)}, not one tensor of logits; "
                             "pick the logits with --output INDEX (e.g. --output 0; Python: "
                             "ibrar.user_model.SelectOutput(model, 0))")
    if isinstance(out, Mapping):
        raise ModelSpecError(f"the model returns a dict with keys {sorted(map(str, out))}, not one tensor of logits;"
                             " pick the logits with --output KEY (Python: ibrar.user_model.SelectOutput(model, KEY))")
    if not isinstance(out, Tensor) or out.dim() != 2 or len(out) != len(x):
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ModelSpecError(f"the model must return logits shaped (batch, classes), got {shape}")
    if num_classes is not None and out.shape[1] != num_classes:
        raise ModelSpecError(f"the model returns {out.shape[1]} classes, the dataset has {num_classes}; build it "
                             f"for {num_classes} (e.g. --model-kwargs '{{\"num_classes\": {num_classes}}}')")
    found = []
    sums = out.float().sum(1)
    if bool((out >= -_PROBABILITY_TOLERANCE).all()) and bool(((sums - 1).abs() < _PROBABILITY_TOLERANCE).all()):
        found.append("the model's outputs are probabilities (each row is >= 0 and sums to 1: a softmax at the end?)."
                     " Attacks need logits: a softmax flattens the loss's gradients and makes the model look more "
                     "robust than it is; remove the final softmax")
    elif bool((out <= _PROBABILITY_TOLERANCE).all()) and bool(((out.exp().sum(1) - 1).abs() < 1e-3).all()):
        found.append("the model's outputs are log-probabilities (log_softmax); ibrar's losses expect logits. "
                     "The accuracies stand, but return the logits before log_softmax")
    return found


def warn_train_mode(model: nn.Module) -> str | None:
    """A warning when ``model`` is in train mode (it is evaluated in eval mode, and its mode restored)."""
    if not model.training:
        return None
    return ("the model is in train mode; it is evaluated in eval mode (model.eval(): BatchNorm's running "
            "statistics, no dropout) and put back in train mode afterwards")


def emit(messages: Sequence[str]) -> None:
    for message in messages:
        warnings.warn(message, UserWarning, stacklevel=3)


def evaluate_model(
    model: nn.Module,
    dataset: str = "cifar10",
    data_root: str | Path | None = None,
    out_dir: str | Path = "runs/model",
    eps: float = 8 / 255,
    name: str = "model",
    attacks: Sequence[str] | None = None,
    n: int | None = 1000,
    test_data: Any = None,
    model_warnings: Sequence[str] = (),
    **kwargs: Any,
) -> dict[str, Any]:
    """Evaluate any classifier (images in [0, 1] in, logits out) on a dataset's test split, as `ibrar eval` does:
    the attacks (default the paper's plus AutoAttack) on a seeded subset of ``n``, the worst case per threat
    model, the masking checks; ``out_dir/eval.json`` is written and its content returned (the printed table
    under ``"table"``). ``kwargs`` go to `ibrar.run_eval.run_evaluation` (``steps``, ``seed``, ``batch_size``,
    ``quiet``, ``device``, ``large_eps_check``). A model in train mode, or one that returns probabilities, gets a
    warning (Python's ``warnings``, and in eval.json); one that returns a tuple or a dict is refused.
    """
    from ibrar.build import ModelBundle, resolve_device
    from ibrar.config import build_config
    from ibrar.data import load_split, resolve_data_root
    from ibrar.run_eval import run_evaluation

    if not isinstance(model, nn.Module):
        raise ModelSpecError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    adaptive = [a for a in attacks or () if a.startswith("adaptive")]
    if adaptive:
        raise ModelSpecError(f"attacks: {adaptive} maximise an ibrar run's own IB-RAR loss, which this model "
                             "does not have; choose other attacks")
    found = [*model_warnings, *filter(None, [warn_train_mode(model)])]
    if test_data is None:
        test_data = load_split(dataset, resolve_data_root(data_root), "test")
    device = resolve_device(kwargs.pop("device", "auto"))
    model.to(device)
    probe = test_data.images[:8].to(device)
    found += check_model(model, probe.float() / 255 if probe.dtype == torch.uint8 else probe, test_data.num_classes)
    emit(found)
    config = build_config({"name": name, "data": {"name": dataset}, "eval": {"eps": eps, "attacks": []}})
    loaded = (ModelBundle(model, (), (), None), config, {"num_classes": test_data.num_classes})
    result, table = run_evaluation(None, loaded=loaded, out_dir=out_dir, attacks=attacks, n=n, test_data=test_data,
                                   device=str(device), model_warnings=found, **kwargs)
    return {**result, "table": table}
