"""Collecting runs into results/ (their small artifacts, never a checkpoint) and finding them there again."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ibrar.errors import InputError
from ibrar.evaluation_record import Evaluation
from ibrar.experiments import build_experiment, table6
from ibrar.experiments.base import SCALES, get_scale
from ibrar.run_files import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    CONFUSION_FILE,
    EVAL_FILE,
    FEATURES_FILE,
    META_FILE,
    METRICS_FILE,
    RECORDS,
)
from ibrar.run_folder import RunFolder
from ibrar.run_names import split_folders, split_variant

RESULTS_DIR = "results"
# What a run folder contributes to results/: config, versions and hardware, per-epoch log, evaluation.
# The ones every finished run has (the others are copied when present and small).
REQUIRED = (CONFIG_FILE, META_FILE, METRICS_FILE, EVAL_FILE)
ARTIFACTS = RECORDS
# what a run trained on a GPU lease brings back instead of its weights: the inputs of Figure 3 and Table 5
# (ibrar.figure_data), copied whatever their size when the run has them: they are bounded by their examples (at
# full width, 500 x 4096 fc2 features are about 2.4 MB) and, with the weights gone, the only copy
FIGURE_INPUTS = (FEATURES_FILE, CONFUSION_FILE)
OPTIONAL_SIZE_LIMIT = 1 << 20  # bytes; a larger record (info_plane.jsonl, which grows with training) stays behind


class ReportError(InputError):
    """A run that cannot be collected, or docs whose markers do not match the known tables."""


def partial_folder(results: Path, experiment_folder: str) -> Path:
    """Where runs of `experiment_folder` (e.g. table4-paper) that a GPU lease ran out on are kept, apart."""
    return results / f"{experiment_folder}-partial"


def default_into(run_dir: Path) -> Path:
    """results/<experiment>-<scale> for a run of `ibrar reproduce` (runs/<experiment>-<scale>/<run>)."""
    parent = run_dir.resolve().parent.name
    if parent in ("", "runs", RESULTS_DIR):
        raise ReportError(f"--into: {run_dir} is not inside an experiment folder (runs/<experiment>-<scale>/); "
                          "name the results folder, e.g. --into results/quickstart")
    return Path(RESULTS_DIR) / parent


def collect_run(run_dir: str | Path, into: str | Path | None = None) -> Path:
    """Copy the small artifacts of a finished run to `into/<run name>/` (replacing an earlier copy)."""
    run_dir = Path(run_dir)
    if run_dir.suffix == ".pt" or run_dir.is_file():
        raise ReportError(f"RUN_DIR: {run_dir} is a file; give the run folder (checkpoints are never collected)")
    if not run_dir.is_dir():
        raise ReportError(f"RUN_DIR: {run_dir} does not exist")
    for required in REQUIRED:
        if not (run_dir / required).is_file():
            hint = f"; evaluate it first: ibrar eval {run_dir}" if required == EVAL_FILE else ""
            raise ReportError(f"RUN_DIR: {run_dir} has no {required}, so it is not a finished run{hint}")
    evaluated = RunFolder(run_dir).require_evaluation().checkpoint
    if evaluated is not None and Path(evaluated).name == CHECKPOINT_FILE:  # `ibrar eval` of an interrupted run
        raise ReportError(f"RUN_DIR: {run_dir}'s {EVAL_FILE} is of its {CHECKPOINT_FILE}, before training finished, "
                          f"so it is not a finished run; finish it with `ibrar train --resume {run_dir}`, then "
                          "collect it")
    target = Path(into) if into is not None else default_into(run_dir)
    target = target / run_dir.resolve().name
    if target.resolve() == run_dir.resolve():
        raise ReportError(f"--into: {target} is the run folder itself; choose a folder under {RESULTS_DIR}/")
    fresh_folder(target)
    copy_artifacts(run_dir, target)
    return target


def fresh_folder(target: Path) -> None:
    """`target` empty, replacing an earlier results copy of a run; a folder that holds anything else is refused."""
    if target.is_dir():
        strays = sorted(p.name for p in target.iterdir() if p.name not in (*ARTIFACTS, *FIGURE_INPUTS))
        if strays:
            raise ReportError(f"--into: {target} holds other files ({', '.join(strays)}); it is not a results "
                              "copy of a run, so it is left alone")
        shutil.rmtree(target)
    target.mkdir(parents=True)


def copy_artifacts(run_dir: Path, target: Path) -> None:
    """Copy the run's artifacts that exist into `target` (an existing folder); an optional record only when
    small, the figures' inputs always."""
    for name in (*ARTIFACTS, *FIGURE_INPUTS):
        source = run_dir / name
        if source.is_file() and (name in REQUIRED or name in FIGURE_INPUTS
                                 or source.stat().st_size <= OPTIONAL_SIZE_LIMIT):
            shutil.copyfile(source, target / name)


def collect_table6_view(run: Path, results: Path) -> Path | None:
    """Table 6's view of a collected run that is one of its networks (`table6.SOURCES`: Table 4's rows (1) and (6),
    Table 1's PGD-AT + IB-RAR run) and whose seeded-subset evaluation (the GPU kit's, `subsets` in eval.json) holds
    every one of Table 6's attacks: `results/table6-<scale>/<network><variant><seed>/` with the run's records and
    that subset's evaluation as its eval.json, so that each of Table 6's columns is on the same test examples.
    None for any other run. `run`: the copy in results/<experiment>-<scale>/."""
    experiment, _, scale = run.parent.name.partition("-")
    split = split_variant(run.name, [group for source, group in table6.SOURCES if source == experiment])
    if split is None or scale not in SCALES:
        return None
    group, variant, seed = split
    needed = {get_scale(scale).attack(a) for a in table6.ATTACKS}
    subsets = read_json(run / EVAL_FILE).get("subsets", {})
    subset = next((s for s in subsets.values() if needed <= {a["name"] for a in s.get("attacks", [])}), None)
    if subset is None:
        return None
    target = results / f"table6-{scale}" / f"{table6.network_of(experiment, group)}{variant}{seed}"
    fresh_folder(target)
    for name in ARTIFACTS:  # the run's records (its figures' inputs stay with its own table)
        if name != EVAL_FILE and (run / name).is_file():
            shutil.copyfile(run / name, target / name)
    view = {**subset, "notes": [*subset.get("notes", []), f"Table 6's view of `{run.parent.name}/{run.name}`: its "
                                f"evaluation on the seeded subset of {subset['n']} test examples, every attack on "
                                "the same examples"]}
    RunFolder(target).write_evaluation(Evaluation.from_dict(view, target / EVAL_FILE))
    return target


# ---- finding the collected runs -----------------------------------------------------------------------------------


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def collected_experiment(name: str, scale: str, folder: Path, variant: str = "") -> Any:
    """The experiment's run list, with as many seeds as the collected folders hold (`<run>-seed<k>`): of the
    build with one seed and the one with max(k) + 1, the one whose run names match more collected folders (the
    scale study trains its cheap points with two seeds and the others with one), and any `<run>-seed<k>` beside
    a `<run>` of one seed. `variant`: the runs named `<group><variant>[-seed<k>]` instead (the GPU kit's folders
    of one optimizer, e.g. `vgg16-6-ibrar-authors-optim-seed1`; `variants` lists those present)."""
    single = build_experiment(name, scale)
    # the folders of this variant, read as plain names (named with the variant again at the end)
    collected = {f"{group}{seed}" for group, found, seed in split_folders(folder, (r.group for r in single.runs))
                 if found == variant}
    seeds = [int(m.group(1)) for name_ in collected if (m := re.search(r"-seed(\d+)$", name_))]
    more = max(seeds, default=0) + 1
    builds = [single] + ([build_experiment(name, scale, seeds=more)] if more > 1 else [])
    chosen = max(builds, key=lambda e: len(collected & {r.name for r in e.runs}))
    # seeds added later beside a seed-0 run without suffix (`<run>`, then `<run>-seed1`, ...) join its row
    chosen.runs = [replace(r, name=r.group) if r.name == f"{r.group}-seed0" and r.name not in collected
                   and r.group in collected else r for r in chosen.runs]
    chosen.runs += [replace(r, name=n, seed=int(m.group(1))) for r in list(chosen.runs) if r.name == r.group
                    for n in sorted(collected - {s.name for s in chosen.runs})
                    if (m := re.fullmatch(rf"{re.escape(r.group)}-seed([1-9]\d*)", n))]
    if variant:
        chosen.runs = [replace(r, name=f"{r.group}{variant}{r.name[len(r.group):]}") for r in chosen.runs]
    return chosen


def group_dirs(experiment: Any, folder: Path, groups: Sequence[str]) -> list[Path]:
    return [folder / spec.name for group in groups for spec in experiment.runs_of(group)
            if RunFolder(folder / spec.name).has_evaluation()]


def n_runs(experiment: Any, folder: Path, group: str) -> int:
    return len(group_dirs(experiment, folder, [group]))
