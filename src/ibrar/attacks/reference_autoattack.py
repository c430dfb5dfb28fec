"""The number ibrar calls AutoAttack: Croce and Hein's own code (the ``pyautoattack`` package), standard version.

``ReferenceAutoAttack(model, eps).run(x, y)`` calls ``pyautoattack.AutoAttack(model, norm="Linf", eps=eps,
version="standard", seed=seed).run_standard_evaluation(x, y, batch_size=250, state_path=...)`` on all the
given examples, in their order, and hands back what the reference only logs: the robust accuracy after each
stage (APGD-CE, APGD-T, FAB-T, Square), the per-example robust mask and the warnings of its own sanity
checks. Only two things are set on the reference object after it is built: the number of target classes of
APGD-T and FAB-T (min(9, classes - 1)) and, where a caller asks for it, a smaller budget.

Per-stage results come from the reference itself: its logger announces the end of each stage, and at that
moment its state file (``state_path``, rewritten after every batch) holds the robust flags. That state file
and a small progress file of ours, kept in ``state_dir``, let an interrupted evaluation resume: pyautoattack
0.2.0 cannot restore its own state (it stores the attack set as text, then refuses the file), so the stages
still to run are handed to the reference's standard object, on the examples its state file says are still
robust. Every reference attack reseeds itself per batch and the robust examples are batched in the same
order, so a run resumed at a stage boundary ends with the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ibrar.modes import eval_mode, frozen_parameters

STAGES = ("apgd-ce", "apgd-t", "fab-t", "square")
STAGE_LABELS = {"clean": "clean", "apgd-ce": "APGD-CE", "apgd-t": "APGD-T", "fab-t": "FAB-T", "square": "Square"}
STANDARD_BUDGET = {"n_iter": 100, "n_queries": 5000}
DEFAULT_BATCH_SIZE = 250  # the reference's own default
STATE_FILE = "autoattack_state.json"  # the reference's format, written by the reference
PROGRESS_FILE = "autoattack_progress.json"  # ours: finished stages and their robust flags
_LOGGER = "auto-attack"
_END_OF_STAGE = "robust accuracy after "
_CLEAN_DONE = "initial accuracy"
_STAGE_START = re.compile(r"running (\S+)$")
_BATCH_DONE = re.compile(r"(\S+) - \d+/\d+ - (\d+) out of (\d+) successfully perturbed")


def _package() -> Any:
    try:
        import pyautoattack
    except ImportError as err:  # a runtime dependency, but say what to do if it is missing
        raise ImportError("the reference AutoAttack needs the pyautoattack package: pip install "
                          "'pyautoattack>=0.2.0,<0.3'") from err
    return pyautoattack


def package_version() -> str:
    return str(_package().__version__)


@dataclass
class AutoAttackResult:
    """What one reference AutoAttack evaluation found on ``n`` examples."""

    n: int
    stages: dict[str, float]  # "clean" and each stage -> robust accuracy over all n after it
    robust: Tensor = field(repr=False)  # per example, after the last stage
    warnings: list[str]
    seconds: float
    params: dict[str, Any]
    resumed_stages: list[str] = field(default_factory=list)  # finished by an earlier, interrupted call

    @property
    def accuracy(self) -> float:
        return self.stages[STAGES[-1]]

    def to_dict(self) -> dict[str, Any]:
        return {**self.params, "n": self.n, "stages": dict(self.stages), "robust_accuracy": self.accuracy,
                "seconds": self.seconds, "warnings": list(self.warnings),
                "resumed_stages": list(self.resumed_stages)}


class _Capture(logging.Handler):
    """Collects the reference's warnings and, at the end of each stage, the robust flags of its state file;
    with ``progress`` (an `ibrar.eval_progress.EvalProgress`), follows its stages batch by batch."""

    def __init__(self, on_stage: Any, count_robust: Any = None, progress: Any = None) -> None:
        super().__init__(logging.DEBUG)
        self.on_stage, self.count_robust, self.progress = on_stage, count_robust, progress
        self.warnings: list[str] = []
        self.robust: int | None = None  # examples robust so far, among those the reference was given

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            self.warnings.append(message)
        elif message.startswith(_CLEAN_DONE):
            self.on_stage("clean")
            if self.count_robust is not None:
                self.robust = self.count_robust()
        elif message.startswith(_END_OF_STAGE):
            self.on_stage(message[len(_END_OF_STAGE):].split(":")[0].lower())
            if self.progress is not None:
                self.progress.finish(self.robust)
        elif self.progress is not None and self.robust is not None:
            self._follow(message)

    def _follow(self, message: str) -> None:
        started = _STAGE_START.match(message)
        batch = _BATCH_DONE.match(message)
        if started and started.group(1) in STAGES and self.robust > 0:  # with none left, the reference stops
            self.progress.start(f"autoattack {STAGE_LABELS[started.group(1)]}", self.robust)
        elif batch and batch.group(1) in STAGES:
            broken = int(batch.group(2))
            self.robust -= broken
            self.progress.advance(int(batch.group(3)), broken)


@contextlib.contextmanager
def _listening(handler: logging.Handler) -> Iterator[None]:
    logger = logging.getLogger(_LOGGER)
    level, propagate = logger.level, logger.propagate
    logger.setLevel(logging.DEBUG)
    logger.propagate = False  # the reference's per-batch debug lines stay out of the user's log
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


class ReferenceAutoAttack:
    """The reference's standard AutoAttack, L-inf, with a fixed seed; ``run`` evaluates a set of examples.

    ``n_iter`` (APGD-CE, APGD-T, FAB-T steps) and ``n_queries`` (Square) are the reference's budget; change
    them only for tests or quick checks (``params()["standard_budget"]`` says whether they are standard).
    ``n_target_classes=None`` follows the model: min(9, classes - 1).
    """

    norm = "linf"
    name = "autoattack"

    @property
    def threat_model(self) -> tuple[str, float | None]:
        return (self.norm, self.eps)

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        seed: int = 0,
        n_target_classes: int | None = None,
        n_iter: int = STANDARD_BUDGET["n_iter"],
        n_queries: int = STANDARD_BUDGET["n_queries"],
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(eps, (int, float)) or eps < 0:
            raise ValueError(f"eps must be a number >= 0, got {eps!r}")
        if not isinstance(seed, int):
            raise ValueError(f"seed must be an int (the reference is run with a fixed seed), got {seed!r}")
        for key, value in (("n_iter", n_iter), ("n_queries", n_queries)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be an int >= 1, got {value!r}")
        if n_target_classes is not None and (not isinstance(n_target_classes, int) or n_target_classes < 1):
            raise ValueError(f"n_target_classes must be an int >= 1 or None (min(9, classes - 1)), "
                             f"got {n_target_classes!r}")
        self.model, self.eps, self.seed = model, float(eps), seed
        self.n_target_classes, self.n_iter, self.n_queries = n_target_classes, n_iter, n_queries

    def params(self, num_classes: int | None = None) -> dict[str, Any]:
        targets = self.n_target_classes
        if targets is None and num_classes is not None:
            targets = min(9, num_classes - 1)
        return {"implementation": "pyautoattack", "package_version": package_version(), "version": "standard",
                "norm": "Linf", "eps": self.eps, "seed": self.seed, "n_target_classes": targets,
                "budget": {"n_iter": self.n_iter, "n_queries": self.n_queries},
                "standard_budget": {"n_iter": self.n_iter, "n_queries": self.n_queries} == STANDARD_BUDGET}

    def reference(self, num_classes: int, device: torch.device | str = "cpu") -> Any:
        """The reference object as ``run`` uses it (standard version; targets and budget set after building)."""
        aa = _package().AutoAttack(self.model, norm="Linf", eps=self.eps, version="standard", seed=self.seed,
                                   device=device)
        targets = self.params(num_classes)["n_target_classes"]
        aa.apgd_targeted.n_target_classes = targets
        aa.fab.n_target_classes = targets
        if self.n_iter != STANDARD_BUDGET["n_iter"]:
            aa.apgd.n_iter = aa.apgd_targeted.n_iter = aa.fab.n_iter = self.n_iter
        if self.n_queries != STANDARD_BUDGET["n_queries"]:
            aa.square.n_queries = self.n_queries
        return aa

    def run(self, x: Tensor, y: Tensor, batch_size: int = DEFAULT_BATCH_SIZE,
            state_dir: str | Path | None = None, progress: Any = None) -> AutoAttackResult:
        """Evaluate all of ``x`` (in [0, 1]) in order; with ``state_dir``, an interrupted call resumes there.
        ``progress`` (an `ibrar.eval_progress.EvalProgress`) follows each stage batch by batch."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if not isinstance(x, Tensor) or x.dim() != 4 or len(x) == 0:
            raise ValueError(f"x must be a non-empty batch of images shaped (N, C, H, W), got "
                             f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
        if not isinstance(y, Tensor) or y.shape != (len(x),):
            raise ValueError(f"y must hold one label per image ({len(x)}), got "
                             f"{tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__}")
        cuda = [x.device] if x.device.type == "cuda" else []
        dtypes = {p.dtype for p in self.model.parameters() if p.is_floating_point()}
        if dtypes - {torch.float32}:
            raise ValueError(f"the reference AutoAttack feeds the model float32 images; this model's parameters are "
                             f"{', '.join(sorted(str(d) for d in dtypes))}: evaluate model.float()")
        with (eval_mode(self.model), frozen_parameters(self.model), torch.random.fork_rng(devices=cuda),
              contextlib.ExitStack() as stack):
            folder = Path(state_dir) if state_dir is not None else Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="ibrar-autoattack-")))
            folder.mkdir(parents=True, exist_ok=True)
            return self._run(x, y.long(), batch_size, folder, progress)

    @staticmethod
    def has_progress(state_dir: str | Path | None) -> bool:
        """Whether an interrupted run left its progress in ``state_dir`` (for some examples: `finished_stages`
        says whether for these)."""
        return state_dir is not None and (Path(state_dir) / PROGRESS_FILE).is_file()

    def finished_stages(self, x: Tensor, y: Tensor, batch_size: int = DEFAULT_BATCH_SIZE,
                        state_dir: str | Path | None = None) -> dict[str, int]:
        """What a `run` on these examples with ``state_dir`` would resume from: the examples robust after each
        stage an earlier, interrupted run finished there (same examples, weights and settings), ``"clean"``
        included; empty when there is none. An estimate of the run can then skip those stages and price the
        rest on exact counts instead of a prior."""
        if not self.has_progress(state_dir):
            return {}
        with eval_mode(self.model):
            _, params = self._run_params(x, batch_size)
        progress = _read_progress(Path(state_dir) / PROGRESS_FILE, self._fingerprint(x, y.long(), params))
        return {stage: int(sum(flags)) for stage, flags in progress["stages"].items()}

    # -- the run and its resumption -------------------------------------------------------------------
    def _run_params(self, x: Tensor, batch_size: int) -> tuple[int, dict[str, Any]]:
        """The model's number of classes and the settings a run records and fingerprints (model in eval mode)."""
        with torch.no_grad():
            num_classes = int(self.model(x[:1]).shape[1])
        return num_classes, {**self.params(num_classes), "batch_size": batch_size}

    def _run(self, x: Tensor, y: Tensor, batch_size: int, folder: Path, monitor: Any = None) -> AutoAttackResult:
        start = time.perf_counter()
        num_classes, params = self._run_params(x, batch_size)
        progress_path, state_path = folder / PROGRESS_FILE, folder / STATE_FILE
        key = self._fingerprint(x, y, params)
        progress = _read_progress(progress_path, key)
        done: dict[str, Tensor] = {k: torch.tensor(v, dtype=torch.bool) for k, v in progress["stages"].items()}
        resumed = [s for s in STAGES if s in done]
        flags = _latest(done)
        if progress["subset"] is not None:  # an earlier call attacked this subset: what lay outside was broken
            before = torch.zeros(len(x), dtype=torch.bool)
            attacked = torch.tensor(progress["subset"], dtype=torch.long)
            state = _read_state(state_path)  # and its progress inside the stage in flight, where it saved some
            before[attacked] = state if state is not None and len(state) == len(attacked) else True
            flags = before if flags is None else before & flags
        remaining = [s for s in STAGES if s not in done]
        subset = torch.arange(len(x)) if flags is None else flags.nonzero().squeeze(1)
        progress["subset"] = subset.tolist()
        _write_progress(progress_path, progress)
        state_path.unlink(missing_ok=True)  # the reference cannot restore it; it starts a fresh one

        def on_stage(stage: str) -> None:
            sub = _read_state(state_path)
            if stage in done or sub is None or (stage == "clean" and len(subset) != len(x)):
                return
            now = torch.zeros(len(x), dtype=torch.bool)  # outside the subset: broken before this call
            now[subset] = sub
            done[stage] = now
            progress["stages"][stage] = now.tolist()
            _write_progress(progress_path, progress)

        def count_robust() -> int:
            flags = _read_state(state_path)
            return int(flags.sum()) if flags is not None else 0

        handler = _Capture(on_stage, count_robust, monitor)
        x_adv = x[subset]
        if remaining and len(subset):
            aa = self.reference(num_classes, device=x.device)
            if remaining != list(STAGES):
                aa.attacks_to_run = remaining  # the standard object, minus the stages already finished
            with _listening(handler):
                x_adv, _ = aa.run_standard_evaluation(x[subset], y[subset], batch_size=batch_size,
                                                      state_path=state_path)
            if monitor is not None:
                monitor.finish_open()
        for stage in STAGES:  # stages the reference skipped because nothing robust was left
            done.setdefault(stage, torch.zeros(len(x), dtype=torch.bool))
        robust = done[STAGES[-1]].clone()
        if len(subset):
            with torch.no_grad():  # the final mask from the reference's adversarial examples themselves
                pred = torch.cat([self.model(x_adv[i:i + batch_size]).argmax(1)
                                  for i in range(0, len(x_adv), batch_size)])
            robust[subset] = (pred == y[subset]).cpu() & done[STAGES[-1]][subset]
        progress_path.unlink(missing_ok=True)
        state_path.unlink(missing_ok=True)
        stages = {s: int(done[s].sum()) / len(x) for s in ("clean", *STAGES) if s in done}  # exact k / n
        stages[STAGES[-1]] = int(robust.sum()) / len(x)
        return AutoAttackResult(n=len(x), stages=stages, robust=robust, warnings=handler.warnings,
                                seconds=time.perf_counter() - start, params=params, resumed_stages=resumed)

    def _fingerprint(self, x: Tensor, y: Tensor, params: dict[str, Any]) -> str:
        """Same examples, same model weights, same settings: only then is a progress file reused."""
        digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode())
        for t in (x, y, *self.model.state_dict().values()):
            digest.update(t.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()


def _latest(done: dict[str, Tensor]) -> Tensor | None:
    for stage in (*STAGES[::-1], "clean"):
        if stage in done:
            return done[stage]
    return None


def _read_state(path: Path) -> Tensor | None:
    """The robust flags in the reference's state file (None when it holds none yet)."""
    if not path.is_file():
        return None
    from pyautoattack.state import EvaluationState

    try:
        flags = EvaluationState.from_disk(path).robust_flags
    except (json.JSONDecodeError, KeyError, TypeError, RuntimeError):  # cut by a kill, or no flags yet
        return None
    return None if flags is None else flags.bool()


def _read_progress(path: Path, key: str) -> dict[str, Any]:
    fresh = {"key": key, "stages": {}, "subset": None}
    if not path.is_file():
        return fresh
    try:
        progress = json.loads(path.read_text())
    except json.JSONDecodeError:  # cut by a kill while being written: start again
        return fresh
    return progress if progress.get("key") == key else fresh


def _write_progress(path: Path, progress: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(progress))
    tmp.replace(path)
