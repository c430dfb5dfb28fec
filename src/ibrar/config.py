"""The typed run configuration: YAML in, dotted `key=value` overrides, every error caught before work starts.

Each section is a pydantic model that forbids unknown keys, so a typo fails fast with the valid keys named.
Fractions such as `8/255` are accepted wherever a number is expected.
"""

from __future__ import annotations

import importlib.resources
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ibrar.errors import IbrarError
from ibrar.hsic import Bandwidth, Estimator, KernelKind


class ConfigError(IbrarError, ValueError):
    """A configuration that cannot run; the message names each bad key and what it accepts."""


_FRACTION = re.compile(r"^\s*([0-9.eE+-]+)\s*/\s*([0-9.eE+-]+)\s*$")


def _parse_fraction(value: Any) -> Any:
    if isinstance(value, str):
        match = _FRACTION.match(value)
        if match:
            num, den = float(match.group(1)), float(match.group(2))
            if den == 0:
                raise ValueError(f"division by zero in {value!r}")
            return num / den
    return value


class Section(BaseModel):
    # no NaN or infinity in any number: ib.sigma=.inf would switch the IB terms off without a word
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class ModelConfig(Section):
    name: str = Field("vgg16", description="a registered model (`ibrar list models`), or your own builder: "
                      "package.module:builder or path/to/file.py:builder, called with num_classes=")
    width: float = Field(1.0, gt=0, description="channel multiplier; < 1 gives CPU-sized models")
    ib_layers: list[str] | None = Field(None, description="override the model's IB layer names")
    robust_layers: list[str] | None = None
    last_conv: str | None = None


class DataConfig(Section):
    name: Literal["cifar10", "cifar100", "svhn", "tinyimagenet", "imagefolder"] = "cifar10"
    root: str | None = Field(None, description="data root; else --data-root, IBRAR_DATA_ROOT, ~/.cache/ibrar-data")
    train_subset: int | None = Field(None, ge=2, description="train on a fixed, class-balanced subset")
    batch_size: int = Field(100, ge=2, description="at least 2: BatchNorm and HSIC are statistics of the batch")
    augment: bool = True
    download: bool = False
    resident: bool | None = Field(
        None, description="keep the uint8 training set on the training device and gather, augment and convert "
                          "each batch there (the same batches); None: on for CUDA, off on the CPU")


class MethodConfig(Section):
    name: Literal["ce", "pgd_at", "trades", "mart", "vib"] = "ce"
    eps: float = Field(8 / 255, ge=0, le=1)
    alpha: float = Field(2 / 255, gt=0, le=1, description="inner attack step size")
    steps: int = Field(10, ge=1)
    beta: float = Field(6.0, ge=0, description="TRADES / MART trade-off")
    variant: Literal["standard", "official"] = "standard"
    vib_beta: float = Field(1e-3, ge=0)
    vib_dim: int = Field(256, gt=0)

    _fractions = field_validator("eps", "alpha", mode="before")(_parse_fraction)


class IBConfig(Section):
    enabled: bool = False
    layers: Literal["robust", "all"] | list[str] = "robust"
    alpha: float = Field(0.008, ge=0, description="weight of HSIC(X, T): compression")
    beta: float = Field(0.08, ge=0, description="weight of HSIC(Y, T): label information")
    estimator: Estimator = "nocco"
    label_kernel: KernelKind = "linear"
    sigma: float = Field(5.0, gt=0)
    bandwidth: Bandwidth = "scaled"
    x_source: Literal["clean", "adversarial"] = "clean"
    passes: Literal["train", "both"] = Field("train", description="IB terms on the training pass or both passes")
    epochs: int | None = Field(None, ge=0, description="IB terms on for the first N epochs only (None: always)")

    @field_validator("layers")
    @classmethod
    def _some_layers(cls, layers: str | list[str]) -> str | list[str]:
        if isinstance(layers, list) and not layers:
            raise ValueError("expected 'robust', 'all' or a non-empty list of layer names (ib.enabled=false turns "
                             "the IB terms off)")
        return layers


class MaskConfig(Section):
    enabled: bool = False
    rule: Literal["paper", "official"] = "paper"
    drop_fraction: float = Field(0.05, ge=0, lt=1)
    official_count: int = Field(10, ge=0)
    refresh_every: int = Field(10, ge=1)
    at_eval: bool | None = None
    final_fit: bool = True
    final_fit_batches: int = Field(20, ge=1)


class OptimConfig(Section):
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(1e-2, ge=0)
    nesterov: bool = False
    schedule: Literal["step", "cosine", "none"] = "step"
    step_size: int = Field(20, ge=1)
    gamma: float = Field(0.2, gt=0, le=1)


class TrainConfig(Section):
    epochs: int = Field(60, ge=1)
    eval_subset: int = Field(500, ge=0, description="test examples for the per-epoch clean/PGD accuracy")
    eval_pgd_steps: int = Field(10, ge=0, description="0 turns the per-epoch PGD accuracy off")
    monitor_batch_size: int | None = Field(
        None, gt=0, description="examples the per-epoch monitor runs at once (memory only: the numbers do not "
                                "change); None: the whole eval_subset as one batch")
    checkpoint_every: int = Field(
        1, ge=0, description="write checkpoint.pt every N epochs (and always after the last one, and mid-epoch "
                             "on SIGTERM/SIGINT); 0: only at the end and on a signal or stop deadline")
    info_plane_every: int = Field(50, ge=0, description="record HSIC(X,T), HSIC(Y,T) every K iterations; 0: off")
    threads: int | None = Field(
        None, ge=1, description="torch CPU threads for training and the evaluation after it (None: torch's "
                                "default); on the CPU a result is bit-identical only at the same thread count")
    tensorboard: bool = False
    amp: bool = Field(False, description="bf16 autocast on CUDA (HSIC stays in float32)")
    channels_last: bool = False
    compile: bool = False
    cuda_graph: bool | Literal["auto"] = Field(
        "auto", description="capture the training step as CUDA graphs (ibrar.graph_step); auto: on CUDA, where "
                            "the configuration allows it, with a note and the eager step where it does not")
    forbid_host_sync: bool = Field(
        False, description="raise at any host-device synchronisation inside the training step (a debugging "
                           "check: torch.cuda.set_sync_debug_mode on CUDA, a Python-level stand-in on the CPU)")
    post_step_forward: bool = Field(
        False, description="after each update, one forward in training mode without gradients on the batch the "
                           "method trains on, as the authors' scripts do for their training accuracy: BatchNorm's "
                           "running statistics move twice per batch (the official profile turns it on)")


class EvalConfig(Section):
    attacks: list[str] = Field(default_factory=lambda: ["fgsm", "pgd10"])
    n: int | None = Field(1000, ge=1)
    batch_size: int = Field(200, gt=0)
    eps: float = Field(8 / 255, ge=0, le=1)
    reference: dict[str, float] | None = Field(
        None, description="accuracies of a reference run (e.g. CE only) printed beside the results")
    reference_label: str = "reference"
    reference_config: str | None = Field(
        None, description="the shipped config the reference was measured with: the reference is printed only "
                          "beside a run of the same model, data and schedule (IB and mask settings aside)")

    _fractions = field_validator("eps", mode="before")(_parse_fraction)


class RunConfig(Section):
    name: str = "run"
    profile: Literal["paper", "official"] = "paper"
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    method: MethodConfig = Field(default_factory=MethodConfig)
    ib: IBConfig = Field(default_factory=IBConfig)
    mask: MaskConfig = Field(default_factory=MaskConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        if self.mask.enabled and self.mask.rule == "official" and self.mask.at_eval:
            raise ValueError("mask.at_eval: the official rule never applies the mask at evaluation; "
                             "use mask.rule=paper to keep the mask at test time")
        return self


def _format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            section = _section_for(e["loc"][:-1])
            valid = ", ".join(section.model_fields) if section else ""
            lines.append(f"  {key}: unknown key; valid keys here: {valid}")
        else:
            lines.append(f"  {key}: {e['msg']} (got {e.get('input')!r})")
    return "invalid configuration:\n" + "\n".join(lines)


def _section_for(loc: tuple) -> type[BaseModel] | None:
    model: type[BaseModel] = RunConfig
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None) if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def parse_override(item: str) -> tuple[list[str], Any]:
    """'train.epochs=3' -> (['train', 'epochs'], 3); the value is read as YAML (numbers, lists, booleans)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected key=value with a dotted key, e.g. train.epochs=3")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r}: the key is empty or malformed")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        path, value = parse_override(item)
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is a value, not a section")
            node = child
        node[path[-1]] = value
    return data


RESOLVED_MARKER = "resolved"  # top-level key of a config.yaml whose profile is applied already (not a setting)


def official_profile(data: dict[str, Any], eps: Any = None) -> dict[str, Any]:
    """The authors' code's settings where they differ from the paper's text (METHOD.md section 4).

    `data` is the run as the file and the command line describe it (its method picks the values, its PGD steps
    the step size); `eps` is an eps given on the command line, which the PGD step then follows (None: the
    authors' 0.03).
    """
    method = data.get("method") if isinstance(data.get("method"), dict) else {}
    name = method.get("name", "ce")
    eps = _parse_fraction(eps)
    eps = eps if isinstance(eps, (int, float)) and not isinstance(eps, bool) else 0.03
    steps = method.get("steps", 10)
    steps = steps if isinstance(steps, int) and not isinstance(steps, bool) and steps > 0 else 10  # else: validation
    preset: dict[str, Any] = {
        # eps 0.03 and PGD step eps/steps*2.3 (0.0069 at 10 steps): the authors' attack loader (paper text: 8/255
        # and 2/255)
        "method": {"eps": 0.03, "alpha": eps / steps * 2.3, "variant": "official"},
        "mask": {"rule": "official"},
    }
    if name == "mart":  # the authors' MART: beta 0.5 and a constant learning rate (paper text: beta 6, StepLR)
        preset["method"]["beta"] = 0.5
        preset["optim"] = {"schedule": "none"}
    if name == "trades":  # the authors' TRADES: CE on the adversarial logits + 0.5 KL (paper text: beta 6)
        preset["method"]["beta"] = 0.5
    if name in ("trades", "mart"):  # their TRADES/MART scripts: Gaussian label kernel, IB on both passes
        preset["ib"] = {"label_kernel": "gaussian", "passes": "both"}
    if name in ("ce", "vib"):  # their no-AT scripts: momentum 0.9, no weight decay (paper text: 0 and 1e-2)
        preset["optim"] = {"momentum": 0.9, "weight_decay": 0.0}
    # every training script of theirs: `pred = net(adv_x or inputs)` in train mode after optimizer.step()
    preset["train"] = {"post_step_forward": True}
    return preset


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """`top` over `base`, section by section."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def build_config(data: dict[str, Any] | None = None, overrides: list[str] | None = None,
                 resolved: bool = False) -> RunConfig:
    """Validate a config in three layers: the file's mapping, then its profile, then the overrides.

    The `official` profile overrides what the file says (so that every shipped config runs with the authors'
    values), and `key=value` overrides come last. `resolved=True`, or the file's own `resolved: true` (which
    `dump_config` writes), reads a config that already went through this (a run folder's or an export's
    config.yaml): its profile is not applied a second time, so `ibrar train RUN/config.yaml` trains the run's
    own settings even where it overrode a profile value. Raises ConfigError with every problem listed.
    """
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"config: expected a mapping of sections, got {type(data).__name__}")
    data = dict(data or {})
    marker = data.pop(RESOLVED_MARKER, None)
    if marker not in (None, True):
        raise ConfigError(f"{RESOLVED_MARKER}: ibrar writes `{RESOLVED_MARKER}: true` into the configs it has "
                          f"already resolved (got {marker!r}); remove the key to have the profile applied")
    resolved = resolved or marker is True
    overrides = list(overrides or [])
    wanted = apply_overrides(deep_merge({}, data), overrides)  # the run as file + command line give it
    layered = deep_merge({}, data)
    if resolved and any(parse_override(item)[0] == ["profile"] for item in overrides):
        raise ConfigError("profile: a run's stored config already has its profile applied; start a new run "
                          "from the config file to change the profile")
    if not resolved and wanted.get("profile") == "official":
        eps = [value for path, value in map(parse_override, overrides) if path == ["method", "eps"]]
        preset = official_profile(wanted, eps[-1] if eps else None)
        for section, values in preset.items():
            if isinstance(layered.get(section, {}), dict):  # a malformed section is left for validation
                layered[section] = deep_merge(layered.get(section, {}), values)
    layered = apply_overrides(layered, overrides)
    try:
        return RunConfig.model_validate(layered)
    except ValidationError as err:
        raise ConfigError(_format_errors(err)) from None


def shipped_configs_dir() -> Path:
    """The configs shipped inside the package (the `configs` folder of a checkout links to it)."""
    return Path(str(importlib.resources.files("ibrar") / "configs"))


def shipped_configs() -> list[str]:
    """Names of the shipped configs, relative to `shipped_configs_dir()` (`cpu/table1-pgd_at.yaml`, ...)."""
    root = shipped_configs_dir()
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.yaml"))


def shipped_name(path: str | Path) -> str | None:
    """The name a shipped config file goes by (`cpu/table1-pgd_at.yaml`), which finds it wherever ibrar is
    installed; None for a file outside the package."""
    root = shipped_configs_dir().resolve()
    try:
        return Path(path).resolve().relative_to(root).as_posix()
    except ValueError:
        return None


def find_config(name: str | Path) -> Path:
    """A config file on disk, else a shipped one: `cpu/table1-pgd_at.yaml`, `configs/cpu/table1-pgd_at.yaml`
    and `cpu/table1-pgd_at` all name the same shipped file wherever ibrar is installed."""
    path = Path(name)
    if path.is_file():
        return path
    if not path.is_absolute():
        relative = path.as_posix().removeprefix("./").removeprefix("configs/")
        for candidate in (relative, f"{relative}.yaml"):
            shipped = shipped_configs_dir() / candidate
            if shipped.is_file():
                return shipped
    raise ConfigError(f"config file {name} does not exist, here or among the shipped configs; "
                      "`ibrar list configs` names the shipped ones")


def read_yaml_config(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file as a mapping; `extends: other.yaml` (relative to the file) is read first, then overlaid."""
    path = find_config(path) if not _seen else Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist (named by `extends` in {_seen[-1]})")
    if path.resolve() in _seen:
        raise ConfigError(f"config file {path}: `extends` forms a cycle")
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path}: expected a mapping of sections, got {type(loaded).__name__}")
    parent = loaded.pop("extends", None)
    if parent is not None:
        if not isinstance(parent, str):
            raise ConfigError(f"config file {path}: `extends` expects a file name, got {parent!r}")
        loaded = deep_merge(read_yaml_config(path.parent / parent, (*_seen, path.resolve())), loaded)
    return loaded


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config file (None: all defaults) and apply `key=value` overrides."""
    data = read_yaml_config(path) if path is not None else {}
    return build_config(data, overrides)


# What a resumed run may change: where and how fast it runs, what it logs, how it is evaluated; never a setting its
# checkpoint's weights, optimizer state, batch position and random streams were made with.
RESUMABLE_KEYS = ("name", "device", "data.root", "data.resident", "data.download", "mask.at_eval")
RESUMABLE_SECTIONS = ("train.", "eval.")


def resume_conflicts(stored: RunConfig, config: RunConfig) -> list[str]:
    """The settings ``config`` changes from a run's ``stored`` config that a resume cannot take, each as
    ``key=new (the run has old)``; empty when it may resume with ``config``."""
    old, new = flatten(stored.model_dump(mode="json")), flatten(config.model_dump(mode="json"))
    return [f"{key}={new.get(key)!r} (the run has {old.get(key)!r})" for key in sorted(old.keys() | new.keys())
            if old.get(key) != new.get(key) and key not in RESUMABLE_KEYS and not key.startswith(RESUMABLE_SECTIONS)]


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'optim': {'momentum': 0.9}} -> {'optim.momentum': 0.9}: the dotted keys an override names."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def dump_config(config: RunConfig) -> str:
    """The config as YAML, marked resolved: reading it back never applies its profile again."""
    return yaml.safe_dump({RESOLVED_MARKER: True, **config.model_dump(mode="json")}, sort_keys=False)
