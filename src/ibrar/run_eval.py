"""Evaluate a trained run folder (or checkpoint): what `ibrar eval` and the end of `ibrar train` do.

Loads the model and mask safely (or takes a model already loaded: a zoo model, any PyTorch classifier), picks
the same seeded test subset every time (1,000 examples unless told otherwise), says how long it expects to take
(`ibrar.eval_estimate`), runs the attacks through `ibrar.evaluate` with a progress bar per attack and per
AutoAttack stage (`ibrar.eval_progress`), adds the attack-steps curves and the gradient-masking checks, and
writes `eval.json`. The reference AutoAttack keeps
its resumable state in the run folder while it runs.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ibrar.attacks import ReferenceAutoAttack, build_attack
from ibrar.attacks.reference_autoattack import DEFAULT_BATCH_SIZE as AUTOATTACK_BATCH
from ibrar.build import ModelBundle, build_regularizer, resolve_device
from ibrar.checkpoint import find_checkpoint
from ibrar.config import RunConfig
from ibrar.data import ImageData, check_same_classes, load_split, resolve_data_root
from ibrar.errors import IbrarError, InputError
from ibrar.eval_estimate import EvalPlan, format_duration, plan_evaluation
from ibrar.eval_progress import EvalProgress
from ibrar.evaluate import (
    DEFAULT_BATCH_SIZE,
    evaluate,
    evaluation_examples,
    format_table,
    masking_warnings,
    model_dtype,
    select_subset,
    steps_curve,
)
from ibrar.evaluation_record import Evaluation
from ibrar.export import is_export
from ibrar.loading import load_trained
from ibrar.reproducibility import run_metadata
from ibrar.run_files import CHECKPOINT_FILE, EVAL_FILE, FINAL_FILE
from ibrar.run_folder import RunFolder

DEFAULT_ATTACKS = ("fgsm", "pgd10", "cw", "fab", "nifgsm", "autoattack")  # the paper's, plus AutoAttack
DEFAULT_N = 1000  # a seeded subset of the test set (the whole set when it is smaller)


class EvaluationWouldNotFit(Exception):
    """The evaluation's estimate is over the `time_limit_s` it was given: nothing ran, nothing was written."""

    def __init__(self, seconds: float, limit: float) -> None:
        super().__init__(f"the evaluation is estimated at about {format_duration(seconds)}, over the "
                         f"{format_duration(max(limit, 0.0))} it may take")
        self.seconds, self.limit = seconds, limit


def evaluation_folder(run: Path, out: str | Path | None = None) -> Path:
    """Where `ibrar eval RUN` writes: `out`, else beside the weights; an export folder stays as shared (its
    eval.json is the one its card describes), so its evaluation goes to runs/eval-NAME."""
    if out is not None:
        return Path(out)
    if is_export(run):
        folder = Path("runs") / f"eval-{run.resolve().name}"
        print(f"note: {run} is an export folder, left as shared; this evaluation goes to {folder} (--out chooses "
              "another)", file=sys.stderr)
        return folder
    return run if run.is_dir() else run.parent


def evaluate_run(path: str | Path, **kwargs: Any) -> str:
    """Run the evaluation, write `eval.json` beside the checkpoint, and return the table to print.

    The arguments are :func:`run_evaluation`'s.
    """
    return run_evaluation(path, **kwargs)[1]


def run_evaluation(
    path: str | Path | None,
    data_root: str | Path | None = None,
    attacks: Sequence[str] | None = None,
    n: int | None = DEFAULT_N,
    steps: Sequence[int] | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    quiet: bool = False,
    device: str = "auto",
    test_data: ImageData | None = None,
    large_eps_check: bool = True,
    loaded: tuple[ModelBundle, RunConfig, dict] | None = None,
    out_dir: str | Path | None = None,
    model_warnings: Sequence[str] = (),
    time_limit_s: float | None = None,
) -> tuple[dict[str, Any], str]:
    """Run the evaluation, write `eval.json` beside the checkpoint; return its content and the table to print.

    ``n=None`` is the whole test set; the default 1,000 becomes the whole set when that is smaller.
    ``batch_size=None``: 256 for ibrar's attacks, the reference's own 250 for AutoAttack. ``data_root`` (None: the
    run's data.root, else $IBRAR_DATA_ROOT, else ~/.cache/ibrar-data) is where the test set is read.
    `loaded` is a model already loaded (`path` then only names its weights, e.g. a RobustBench zoo model, or is
    None); `out_dir` is where eval.json goes (None: beside the weights; an export folder is never written, so it
    needs one); an eval.json already there is kept in its eval-history/. `model_warnings` (about the model
    itself) are kept beside the masking checks' warnings and printed. `time_limit_s`: raise
    `EvaluationWouldNotFit` before any attack runs when the estimate (`ibrar.eval_estimate`, measured on this
    model and device) is over it (the GPU kit starts a piece only when it fits the call).
    """
    if out_dir is None and path is None:
        raise InputError("out_dir: a model without a run folder needs a folder for its eval.json")
    if out_dir is None and is_export(path):
        raise InputError(f"{path} is an `ibrar export` folder, whose {EVAL_FILE} is the one its model card "
                         f"describes: give out_dir (ibrar eval --out DIR) for this evaluation's")
    # beside the weights when not given (an export folder was refused above)
    out_dir = Path(out_dir) if out_dir is not None else evaluation_folder(Path(path))
    out_dir.mkdir(parents=True, exist_ok=True)
    # One writer per folder: a training or another evaluation writing into it is refused while this one runs.
    with RunFolder(out_dir).locked():
        started = time.perf_counter()
        dev = resolve_device(device)
        bundle, config, state = loaded if loaded is not None else load_trained(path, device=dev)
        if config.train.threads is not None:  # as in training: on the CPU the numbers follow the thread count
            torch.set_num_threads(config.train.threads)
        checkpoint = find_checkpoint(path) if path is not None else None
        unfinished = unfinished_training(checkpoint, state, config) if loaded is None else None
        if unfinished is not None:  # said before the attacks run, and kept in eval.json and its table
            print(f"note: {unfinished}", file=sys.stderr, flush=True)
            model_warnings = [*model_warnings, unfinished]
        model = bundle.model
        if test_data is None:
            # a data root given here beats the run's data.root: a run whose data has moved is still evaluated
            root = resolve_data_root(data_root or config.data.root)
            test_data = load_split(config.data.name, root, "test")
        check_same_classes(state.get("classes"), test_data.classes, "the model was trained on")
        names = list(attacks) if attacks is not None else list(DEFAULT_ATTACKS)
        if n is not None and n < 1:
            raise InputError(f"--n: expected a positive number of test examples, got {n}")
        total = len(test_data.labels)
        if n == DEFAULT_N and n > total:
            n = None
        if n is not None and n > total:
            raise InputError(f"--n: the test set has {total} examples, got {n}; pass --n all for all of them")
        built = {}
        for name in names:
            params: dict[str, Any] = {"seed": seed}
            if name.startswith("adaptive"):  # PGD_AD maximises the run's own IB-RAR loss
                params["regularizer"] = build_regularizer(config, bundle, int(state.get("num_classes") or 10))
            built[name] = build_attack(name, model, eps=config.eval.eps, **params)
        plan = plan_for(model, test_data, built, n, seed, batch_size, dev, config.eval.eps, large_eps_check, steps,
                        state_dir=out_dir)
        print(estimate_message(plan, built), flush=True)
        if time_limit_s is not None and plan.seconds() > time_limit_s:
            raise EvaluationWouldNotFit(plan.seconds(), time_limit_s)
        progress = EvalProgress(plan, quiet=quiet)
        report = evaluate(model, test_data.images, test_data.labels, built, batch_size=batch_size, device=dev,
                          seed=seed, n=n, eps=config.eval.eps, state_dir=out_dir, progress=progress)
        result = report.to_dict()
        result["checkpoint"] = str(checkpoint) if checkpoint is not None else None
        curves: dict[str, dict[int, float]] = {}
        for family in ("pgd", "cw", "nifgsm") if steps else ():
            curves[family] = steps_curve(model, test_data.images, test_data.labels, family, steps=list(steps),
                                         eps=config.eval.eps, batch_size=batch_size or DEFAULT_BATCH_SIZE,
                                         device=dev, seed=seed, n=n, progress=progress)
        if curves:
            result["curves"] = {fam: {str(k): v for k, v in c.items()} for fam, c in curves.items()}
        warnings = masking_warnings(report, model, test_data.images, test_data.labels, curve=curves.get("pgd"),
                                    large_eps=0.5 if large_eps_check else None,
                                    batch_size=batch_size or DEFAULT_BATCH_SIZE, progress=progress)
        result["warnings"] = warnings
        if model_warnings:
            result["model_warnings"] = list(model_warnings)
        result["reference"] = config.eval.reference
        result["meta"] = run_metadata(seed, dev)  # when, where and at which commit this evaluation ran
        # `seconds` times the attacks; this is the whole evaluation, curves and masking checks included
        result["total_seconds"] = time.perf_counter() - started
        # the estimate printed before the start, kept beside the measured time (bench/bench_estimate.py compares them)
        probe = plan.probe
        result["estimate"] = {"seconds": plan.seconds_at_start, "seconds_per_grad": probe.seconds_per_grad,
                              "seconds_per_call": probe.seconds_per_call, "forward_share": probe.forward_share,
                              "probe_clean": probe.clean, "probe_survive": probe.survive,
                              "pieces": progress.timings}
        evaluation = Evaluation.from_dict(result)  # the typed record checks what is written
        kept = RunFolder(out_dir).keep_earlier_evaluation()
        if kept is not None:
            print(f"note: the earlier {EVAL_FILE} is kept as {kept}", file=sys.stderr, flush=True)
        RunFolder(out_dir).write_evaluation(evaluation)
        result = evaluation.to_dict()
        reference = config.eval.reference if reference_applies(config) else None
        return result, render(report, result, reference, config.eval.reference_label)


def unfinished_training(checkpoint: Path | None, state: dict[str, Any], config: RunConfig) -> str | None:
    """What to say when `checkpoint` is a run's latest checkpoint.pt with no final.pt beside it: the weights of
    a training that has not finished (None otherwise)."""
    if checkpoint is None or checkpoint.name != CHECKPOINT_FILE or (checkpoint.parent / FINAL_FILE).is_file():
        return None
    return (f"{checkpoint.parent} has not finished training (no {FINAL_FILE}): this evaluates its latest "
            f"{CHECKPOINT_FILE}, after {state.get('epoch', '?')} of {config.train.epochs} epochs; "
            f"`ibrar train --resume {checkpoint.parent}` finishes it")


# What makes two runs comparable: everything but the IB-RAR terms, the mask, the name, the evaluation's own settings
# and the knobs that change only speed or bookkeeping.
_NOT_COMPARED = {"name", "ib", "mask", "eval", "device"}
_NOT_COMPARED_IN = {"data": {"root", "download"},
                    "train": {"eval_subset", "eval_pgd_steps", "info_plane_every", "tensorboard", "amp",
                              "channels_last", "compile", "forbid_host_sync", "threads"}}


def _comparable(config: RunConfig) -> dict[str, Any]:
    dumped = config.model_dump()
    out = {k: v for k, v in dumped.items() if k not in _NOT_COMPARED}
    for section, keys in _NOT_COMPARED_IN.items():
        out[section] = {k: v for k, v in out[section].items() if k not in keys}
    return out


def reference_applies(config: RunConfig) -> bool:
    """Whether ``eval.reference`` may be printed beside this run: always when no ``eval.reference_config`` says
    what it was measured with, else only when the run has that config's model, data, method and schedule."""
    if not config.eval.reference:
        return False
    if config.eval.reference_config is None:
        return True
    from ibrar.config import load_config

    try:
        measured_with = load_config(config.eval.reference_config)
    except IbrarError:  # a reference that cannot be checked is not shown as if it applied
        return False
    return _comparable(measured_with) == _comparable(config)


def plan_for(model: Any, test_data: ImageData, attacks: dict[str, Any], n: int | None, seed: int,
             batch_size: int | None, device: Any, eps: float, large_eps_check: bool,
             steps: Sequence[int] | None, state_dir: Path | None = None) -> EvalPlan:
    """The evaluation's plan, its costs measured on a seeded sample of the subset (up to 128 examples); an
    AutoAttack that an interrupted evaluation left in ``state_dir`` is priced from where it will resume."""
    count = len(test_data.labels) if n is None else n
    subset = select_subset(len(test_data.labels), n, seed)
    # a random sample, not the subset's first indices: a test set stored class by class would give one class
    sample = torch.randperm(len(subset), generator=torch.Generator().manual_seed(seed))
    index = subset[sample[: min(batch_size or DEFAULT_BATCH_SIZE, 128)]]
    dtype = model_dtype(model)
    _, x, y = evaluation_examples(test_data.images[index], test_data.labels[index], None, seed, device, dtype)
    resumable = {name: attack for name, attack in attacks.items()
                 if isinstance(attack, ReferenceAutoAttack) and attack.has_progress(state_dir)}
    finished = {}
    if resumable:  # its fingerprint covers every attacked example: only then is the whole subset converted
        _, xs, ys = evaluation_examples(test_data.images, test_data.labels, n, seed, device, dtype)
        finished = {name: attack.finished_stages(xs, ys, batch_size or AUTOATTACK_BATCH, state_dir)
                    for name, attack in resumable.items()}
    plan = plan_evaluation(model, x, y, count, attacks, eps=eps, large_eps_check=large_eps_check,
                           curve_steps=list(steps or ()), batch_size=batch_size, finished=finished)
    plan.seconds_at_start = plan.seconds()
    return plan


def estimate_message(plan: EvalPlan, attacks: dict[str, Any]) -> str:
    """One line: how many examples and attacks, and the estimated time (said to be an estimate)."""
    return (f"evaluating {plan.n} test examples with {', '.join(attacks)}: estimated time about "
            f"{format_duration(plan.seconds())} (a rough estimate: {plan.describe()})")


def render(report: Any, result: dict[str, Any], reference: dict[str, float] | None, label: str) -> str:
    lines = [format_table(report)]
    if reference:
        measured = {"clean": report.clean, **{r.name: r.accuracy for r in report.attacks}}
        lines.append(f"\n{'':12}{'this run':>10}{label:>14}")
        for key, ref in reference.items():
            got = measured.get(key)
            shown = "-" if got is None else f"{got:.2%}"
            lines.append(f"{key:12}{shown:>10}{ref:>14.2%}")
    for curve_name, curve in result.get("curves", {}).items():
        lines.append(f"{curve_name} by steps: " + ", ".join(f"{k}: {v:.2%}" for k, v in curve.items()))
    for warning in result.get("model_warnings", []):
        lines.append(f"WARNING (the model): {warning}")
    for warning in result.get("warnings", []):
        lines.append(f"WARNING (gradient masking?): {warning}")
    return "\n".join(lines)
