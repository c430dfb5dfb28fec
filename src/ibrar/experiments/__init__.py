"""The paper's experiments as lists of runs, and their results beside the paper's numbers.

`build_experiment("table1", "cpu")` gives the runs; `run_experiment(...)` trains, evaluates and writes
results.md / results.json; `run_commands(...)` prints them as shell commands for a scheduler instead.
"""

from __future__ import annotations

import importlib

from ibrar.errors import InputError
from ibrar.experiments.base import (
    SCALES,
    Experiment,
    RunSpec,
    Scale,
    experiment_dir,
    get_scale,
    run_commands,
    run_experiment,
)

EXPERIMENTS = ("table1", "table2", "table3", "table4", "table6", "fig2", "fig4", "fig6", "scale")


def build_experiment(name: str, scale: str | Scale = "cpu", seeds: int = 1) -> Experiment:
    """The runs of one experiment (`EXPERIMENTS`) at a scale ('smoke', 'cpu' or 'paper')."""
    if name not in EXPERIMENTS:
        raise InputError(f"name: expected one of {list(EXPERIMENTS)}, got {name!r}")
    if not isinstance(seeds, int) or seeds < 1:
        raise InputError(f"seeds: expected a positive integer, got {seeds!r}")
    resolved = scale if isinstance(scale, Scale) else get_scale(scale)
    module = importlib.import_module(f"ibrar.experiments.{name}")
    return module.build(resolved, seeds)


__all__ = [
    "EXPERIMENTS",
    "SCALES",
    "Experiment",
    "RunSpec",
    "Scale",
    "build_experiment",
    "experiment_dir",
    "get_scale",
    "run_commands",
    "run_experiment",
]
