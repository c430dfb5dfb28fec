"""Train, then evaluate: the one pipeline that `ibrar train`, `ibrar reproduce` (in sequence, `--parallel`, on
SLURM or local jobs) and the GPU kit all run, so a run means the same thing whoever starts it.

A run folder's state says what is left to do (`RunFolder.state`); a deadline (`stop_at`) stops training as SIGTERM
does, with a checkpoint to resume from.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ibrar.config import RunConfig
from ibrar.run_folder import RunFolder


@dataclass(frozen=True)
class EvalRequest:
    """What to evaluate a trained run with: attack names, the seeded subset (`n`, None: the whole test set), the
    attack-steps curves, and whether to run the large-eps masking check."""

    attacks: Sequence[str]
    n: int | None = 1000
    steps: Sequence[int] = field(default_factory=tuple)
    seed: int = 0
    large_eps_check: bool = True


@dataclass(frozen=True)
class PipelineResult:
    """The state the folder was found in, and the printed evaluation table ('' when nothing was evaluated)."""

    found: str
    table: str = ""


def _trained_to(folder: RunFolder, stored: RunConfig, config: RunConfig) -> bool:
    """A finished run (its config `stored`) that `config` asks nothing more of: its epochs all trained, no setting
    a resume refuses changed (those are left to the trainer, which names them)."""
    from ibrar.config import resume_conflicts

    epochs = [line["epoch"] for line in folder.metrics() if "epoch" in line]
    return bool(epochs) and epochs[-1] >= config.train.epochs and not resume_conflicts(stored, config)


def train_and_evaluate(
    config: RunConfig,
    run_dir: str | Path,
    data_root: str | Path | None = None,
    evaluation: EvalRequest | None = None,
    resume: bool | None = None,
    overwrite: bool = False,
    quiet: bool = False,
    stop_at: float | None = None,
) -> PipelineResult:
    """Train `config` into `run_dir`, then evaluate it with `evaluation` (None: train only).

    `resume=None` goes by what the folder holds: a finished run is left alone, a trained one only evaluated, an
    interrupted one resumed, an empty one started. `resume=True/False` is the caller's explicit choice (`ibrar
    train --resume`, or a new run that `overwrite` may replace), checked against the folder by the trainer; a
    resumed run that has trained all of `config`'s epochs is not trained again, and is evaluated again only when
    `config`'s eval settings differ from its own (or it has no eval.json).
    `stop_at` (a `time.time()`) ends training at the first batch after it with a mid-epoch checkpoint and
    `KeyboardInterrupt`, as SIGTERM does.
    """
    from ibrar.run_eval import evaluate_run
    from ibrar.train import train

    run_dir = Path(run_dir)
    folder = RunFolder(run_dir)
    found = folder.state()
    if resume is None:
        if found == "done":
            return PipelineResult(found)
        needs_training = found != "evaluate"
        resume, overwrite = found == "resume", found == "new"
    else:
        stored = folder.config() if resume and found in ("done", "evaluate") else None
        needs_training = stored is None or not _trained_to(folder, stored, config)
        if not needs_training and found == "done" and config.eval == stored.eval:
            epochs = config.train.epochs
            print(f"note: {run_dir} is trained ({epochs} of {epochs} epochs) and evaluated with its eval settings: "
                  f"nothing to do (`ibrar eval {run_dir}` evaluates it again, train.epochs=N trains it on)",
                  file=sys.stderr, flush=True)
            return PipelineResult(found)
    test_data = None
    if needs_training:
        trainer = train(config, run_dir, data_root=data_root, resume=resume, overwrite=overwrite, quiet=quiet,
                        stop_at=stop_at)
        test_data = trainer.test_data
    if evaluation is None or not evaluation.attacks:
        return PipelineResult(found)
    from ibrar.distributed import launched_as_main

    if not launched_as_main():  # under torchrun rank 0 evaluates, as it alone writes the folder
        return PipelineResult(found)
    # the data the run trained on (its data.root first, as in training): evaluate_run prefers a root it is given
    table = evaluate_run(run_dir, data_root=config.data.root or data_root, attacks=list(evaluation.attacks),
                         n=evaluation.n, steps=list(evaluation.steps) or None, seed=evaluation.seed, quiet=quiet,
                         test_data=test_data, large_eps_check=evaluation.large_eps_check)
    return PipelineResult(found, table)
