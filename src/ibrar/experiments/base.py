"""An experiment is a list of run specs (config file + overrides + the attacks it is judged by) at one scale.

The runner trains and evaluates them one after another into `<out>/<experiment>-<scale>/<run>/`, skips runs
that already finished, resumes an interrupted one, and can instead print one shell command per run so a
cluster scheduler can run them in parallel; the results are then collected by running it again.
"""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ibrar.config import ConfigError, load_config, shipped_configs_dir, shipped_name
from ibrar.errors import InputError
from ibrar.eval_estimate import format_duration
from ibrar.experiments.table_spec import TableSpec
from ibrar.models import create_model
from ibrar.pipeline import EvalRequest, train_and_evaluate
from ibrar.run_folder import RunFolder

# The configs shipped in the package; IBRAR_CONFIGS points elsewhere (a folder with paper/ and cpu/ inside).
CONFIG_ROOT = Path(os.environ.get("IBRAR_CONFIGS") or shipped_configs_dir())

# Logical attack names (what the paper's tables call them) -> the attack the registry builds at full scale.
FULL_ATTACKS: dict[str, str] = {
    "pgd10": "pgd10",
    "cw": "cw",
    "fgsm": "fgsm",
    "fab": "fab",
    "nifgsm": "nifgsm",
    "autoattack": "autoattack",
    "adaptive10": "adaptive10",
    "adaptive100": "adaptive100",
}
# Smoke scale: the same attack families with a few steps. AutoAttack (the reference pyautoattack, minutes per
# run) is stood in for by a 3-step APGD-CE, and the results tables label that column "apgd-ce3 (smoke
# stand-in, not AutoAttack)": only the reference's standard version is ever called AutoAttack.
SMOKE_ATTACKS: dict[str, str] = {
    "pgd10": "pgd2",
    "cw": "cw3",
    "fgsm": "fgsm",
    "fab": "fab2",
    "nifgsm": "nifgsm2",
    "autoattack": "apgd-ce3",
    "adaptive10": "adaptive2",
    "adaptive100": "adaptive3",
}

_CPU_OVERRIDES = (
    "model.width=0.25",
    "data.train_subset=10000",
    "optim.step_size=4",
    "train.epochs=10",
    "train.eval_subset=200",
    "train.info_plane_every=25",
    "eval.n=1000",
)
_SMOKE_OVERRIDES = (
    "model.name=small_cnn",
    "model.width=0.25",
    "data.train_subset=32",
    "data.batch_size=16",
    "train.epochs=1",
    "train.eval_subset=8",
    "train.eval_pgd_steps=2",
    "train.info_plane_every=1",
    "method.steps=2",
    "mask.final_fit_batches=2",
)


@dataclass(frozen=True)
class Scale:
    """How big the runs of an experiment are: which configs, which overrides, which attack budgets."""

    name: str
    config_dir: str  # configs/<config_dir>/<name>.yaml is used when it exists, else configs/paper + overrides
    overrides: tuple[str, ...]  # applied to a paper config when no twin exists in config_dir
    final_overrides: tuple[str, ...]  # applied last, over the experiment's own overrides
    attacks: Mapping[str, str]
    eval_n: int | None  # None: the config's eval.n
    curve_steps: tuple[int, ...]
    large_eps_check: bool
    plot_n: int  # examples for t-SNE and the confusion table

    def attack(self, logical: str) -> str:
        if logical not in self.attacks:
            raise ValueError(f"logical: expected one of {sorted(self.attacks)}, got {logical!r}")
        return self.attacks[logical]


SCALES: dict[str, Scale] = {
    "paper": Scale("paper", "paper", (), (), FULL_ATTACKS, None, (1, 5, 10, 20, 50), True, 1000),
    "cpu": Scale("cpu", "cpu", _CPU_OVERRIDES, (), FULL_ATTACKS, None, (1, 5, 10, 20, 50), True, 500),
    # Every smoke run reads the ImageFolder at --data-root, whatever dataset the paper's config names, and is
    # evaluated on its whole (tiny) test split, so that some examples are always classified correctly.
    "smoke": Scale(
        "smoke",
        "paper",
        _SMOKE_OVERRIDES,
        ("data.name=imagefolder", "eval.n=null"),
        SMOKE_ATTACKS,
        None,
        (1, 2),
        False,
        32,
    ),
}


def get_scale(name: str) -> Scale:
    if name not in SCALES:
        raise InputError(f"scale: expected one of {list(SCALES)}, got {name!r}")
    return SCALES[name]


@dataclass(frozen=True)
class RunSpec:
    """One run: a config file plus overrides, and how it is evaluated. `group` joins the seeds of one row."""

    name: str
    group: str
    config: Path
    overrides: tuple[str, ...]
    attacks: tuple[str, ...]
    n: int | None = None
    steps: tuple[int, ...] = ()
    seed: int = 0


@dataclass
class Experiment:
    """The runs of one paper table or figure at one scale, the tables it shows (declared once, for results.md and
    the docs alike) and the function that turns the runs into results."""

    name: str
    title: str
    scale: Scale
    seeds: int
    runs: list[RunSpec]
    report: Callable[[Experiment, Path, str | Path | None], Any]
    attacks: tuple[str, ...] = ()  # the logical attacks its runs are judged by (results name what each ran as)
    tables: tuple[TableSpec, ...] = ()  # what results.md and the docs show (`ibrar.experiments.table_spec`)
    notes: tuple[str, ...] = ()  # the lines results.md writes under the tables

    def runs_of(self, group: str) -> list[RunSpec]:
        found = [r for r in self.runs if r.group == group]
        if not found:
            raise ValueError(f"group: expected one of {sorted({r.group for r in self.runs})}, got {group!r}")
        return found


def resolve_config(
    config_name: str, scale: Scale, config_root: Path = CONFIG_ROOT
) -> tuple[Path, tuple[str, ...]]:
    """The config file for a paper config name at a scale, and the overrides that size it."""
    twin = config_root / scale.config_dir / f"{config_name}.yaml"
    if scale.config_dir != "paper" and twin.is_file():
        return twin, ()
    paper = config_root / "paper" / f"{config_name}.yaml"
    if not paper.is_file():
        raise ConfigError(f"config_name: no {paper} (configs are looked up under {config_root}; "
                          "IBRAR_CONFIGS, when set, must name a folder holding paper/ and cpu/)")
    return paper, scale.overrides


def make_runs(
    name: str,
    config_name: str,
    scale: Scale,
    seeds: int,
    attacks: Sequence[str],
    overrides: Sequence[str] = (),
    steps: Sequence[int] = (),
) -> list[RunSpec]:
    """The specs of one row: one run per seed (named `<name>-seed<k>` when there is more than one)."""
    if not isinstance(seeds, int) or seeds < 1:
        raise InputError(f"seeds: expected a positive integer, got {seeds!r}")
    config, sizing = resolve_config(config_name, scale)
    # `ibrar train` would evaluate config.eval.attacks itself; the experiment evaluates with its own list.
    base = (*sizing, *overrides, *scale.final_overrides, "eval.attacks=[]")
    concrete = tuple(scale.attack(a) for a in attacks)
    n = scale.eval_n if scale.eval_n is not None else load_config(config, list(base)).eval.n
    specs = []
    for seed in range(seeds):
        run_name = name if seeds == 1 else f"{name}-seed{seed}"
        seed_override = () if seeds == 1 else (f"seed={seed}",)
        specs.append(
            RunSpec(run_name, name, config, (*base, *seed_override), concrete, n, tuple(steps), seed)
        )
    return specs


def model_layers(config_name: str, scale: Scale, overrides: Sequence[str] = ()) -> tuple[str, ...]:
    """The IB layer names of the model a config builds at this scale (Table 3 trains one run per layer)."""
    config_path, sizing = resolve_config(config_name, scale)
    config = load_config(config_path, [*sizing, *overrides, *scale.final_overrides])
    if config.model.ib_layers:
        return tuple(config.model.ib_layers)
    model = create_model(config.model.name, num_classes=10, width=min(config.model.width, 0.0625))
    return tuple(model.ib_layers)


def format_number(value: float) -> str:
    """A float as plain decimal text: YAML 1.1 would read '5e-05' as a string, '0.00005' as a number."""
    text = f"{value:.10f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


# ---- running ----------------------------------------------------------------------------------------


def experiment_dir(out: str | Path, experiment: Experiment) -> Path:
    return Path(out) / f"{experiment.name}-{experiment.scale.name}"


def run_spec(
    spec: RunSpec,
    run_dir: Path,
    data_root: str | Path | None = None,
    quiet: bool = False,
    large_eps_check: bool = True,
    evaluate: bool = True,
) -> str:
    """Train (or resume) and evaluate one run unless it already finished (`ibrar.pipeline`); returns the state
    found.

    `evaluate=False` only trains (the other ranks of a multi-task cluster job)."""
    folder = RunFolder(run_dir)
    state = folder.state()
    if state == "done":
        return state
    config = load_config(spec.config, list(spec.overrides))
    if state in ("resume", "evaluate"):
        stored = folder.config()
        if stored.model_dump(mode="json") != config.model_dump(mode="json"):
            raise InputError(
                f"out: run folder {run_dir} holds a run with another config; delete it or pass another --out"
            )
    evaluation = EvalRequest(spec.attacks, spec.n, spec.steps, spec.seed, large_eps_check) if evaluate else None
    return train_and_evaluate(config, run_dir, data_root=data_root, evaluation=evaluation, quiet=quiet).found


def run_experiment(
    experiment: Experiment,
    out: str | Path = "runs",
    data_root: str | Path | None = None,
    quiet: bool = False,
    log: Callable[[str], None] = print,
    only: Sequence[str] | None = None,
) -> Path:
    """Run every spec in sequence (or those named in `only`, by run or row name), then write results.md /
    results.json (and figures) in the folder once every run of the experiment has finished."""
    folder = experiment_dir(out, experiment)
    folder.mkdir(parents=True, exist_ok=True)
    chosen = choose_runs(experiment, only)
    states = [RunFolder(folder / spec.name).state() for spec in chosen]
    spent, measured = 0.0, 0  # runs that trained or evaluated here, and their time: the experiment's pace
    for i, (spec, state) in enumerate(zip(chosen, states, strict=True), 1):
        run_dir = folder / spec.name
        verb = {"done": "skip (finished)", "evaluate": "evaluate", "resume": "resume", "new": "train"}[state]
        to_go = sum(s != "done" for s in states[i - 1:])
        pace = (f" (experiment left about {format_duration(spent / measured * to_go)}, at the pace of the "
                f"{measured} run{'s' if measured != 1 else ''} so far)") if measured and state != "done" else ""
        log(f"[{i}/{len(chosen)}] {spec.name}: {verb}{pace}")
        started = time.perf_counter()
        run_spec(
            spec, run_dir, data_root=data_root, quiet=quiet, large_eps_check=experiment.scale.large_eps_check
        )
        if state != "done":
            spent, measured = spent + time.perf_counter() - started, measured + 1
    collect_results(experiment, folder, data_root, log)
    return folder


def choose_runs(experiment: Experiment, only: Sequence[str] | None) -> list[RunSpec]:
    """The runs named in `only` (by run or row name), or all of them."""
    if not only:
        return list(experiment.runs)
    known = {r.name for r in experiment.runs} | {r.group for r in experiment.runs}
    unknown = sorted(set(only) - known)
    if unknown:
        raise InputError(f"only: unknown runs {unknown}; this experiment has {sorted(known)}")
    return [r for r in experiment.runs if r.name in only or r.group in only]


def collect_results(
    experiment: Experiment, folder: Path, data_root: str | Path | None, log: Callable[[str], None] = print
) -> bool:
    """Write results.md / results.json (and figures) if every run has finished; True when written.

    The experiment's report returns an `ibrar.experiments.results.Results`, which writes itself: this module
    sits below the results module and does not import it.
    """
    done = sum(RunFolder(folder / r.name).state() == "done" for r in experiment.runs)
    if done < len(experiment.runs):
        log(f"{done} of {len(experiment.runs)} runs have finished; results.md is written when all have")
        return False
    results = experiment.report(experiment, folder, data_root)
    md, js = results.write(folder)
    log(f"results: {md} and {js}")
    return True


def run_commands(
    experiment: Experiment, out: str | Path = "runs", data_root: str | Path | None = None,
    only: Sequence[str] | None = None,
) -> list[str]:
    """One `ibrar train ... && ibrar eval ...` line per run (those of `only`, by run or row name, if given);
    rerun `ibrar reproduce` to collect results. A shipped config goes by its name, so the lines run on any
    machine with ibrar installed (a cluster's nodes, another checkout)."""
    folder = experiment_dir(out, experiment)
    root = ["--data-root", str(data_root)] if data_root is not None else []
    lines = []
    for spec in choose_runs(experiment, only):
        run_dir = str(folder / spec.name)
        config = shipped_name(spec.config) or str(spec.config)
        train = ["ibrar", "train", config, *spec.overrides, "--out", run_dir, *root, "--quiet"]
        evaluate = [
            "ibrar",
            "eval",
            run_dir,
            "--attacks",
            ",".join(spec.attacks),
            "--seed",
            str(spec.seed),
            *root,
            "--quiet",
        ]
        evaluate += ["--n", "all" if spec.n is None else str(spec.n)]
        if spec.steps:
            evaluate += ["--steps", ",".join(str(s) for s in spec.steps)]
        lines.append(f"{shlex.join(train)} && {shlex.join(evaluate)}")
    return lines
