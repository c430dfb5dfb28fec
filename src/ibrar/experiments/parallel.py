"""`ibrar reproduce EXPERIMENT --parallel N`: N of an experiment's runs side by side on one device, one process
per run, so that a GPU too large for one small model (an H200 and a CIFAR-10 VGG16) is kept busy.

Processes, not one process stepping several models: each run keeps its own RNG streams, CUDA context, allocator
and compiled graphs, so its results are those of the same run alone (the CPU test checks the final weights and
metrics of N = 2), and a run that fails or is stopped leaves the others running. Whether one process stepping
several models would be faster on a GPU is measured on a lease: `parallel.json` records each run's seconds per
epoch side by side, to set beside the same run's alone (bench/gpu/README.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ibrar.errors import IbrarError, InputError
from ibrar.experiments.base import (
    Experiment,
    RunSpec,
    choose_runs,
    collect_results,
    experiment_dir,
    run_spec,
)
from ibrar.run_folder import RunFolder

LOGS_DIR = "parallel-logs"  # <experiment folder>/parallel-logs/<run>.log: each process's output
RECORD_FILE = "parallel.json"  # <experiment folder>/parallel.json: what each process did, and how fast


class ParallelRunError(IbrarError):
    """One or more of the side-by-side runs failed; the message names each run and its log."""


def child_threads(parallel: int) -> int:
    """CPU threads of each process: this process's share, so that N processes do not oversubscribe the cores."""
    import torch

    return max(1, torch.get_num_threads() // parallel)


def thread_note(runs: Sequence[RunSpec], threads: int) -> str | None:
    """What a side-by-side CPU run changes: its sums' order follows its thread count, so a run that leaves
    `train.threads` unset ends bit-identical to the run alone only if it had as many threads alone (None: no
    such run, or a GPU trains them)."""
    import torch

    from ibrar.config import load_config

    alone = torch.get_num_threads()
    if threads >= alone or torch.cuda.is_available():
        return None
    unpinned = [spec.name for spec in runs if load_config(spec.config, list(spec.overrides)).train.threads is None]
    if not unpinned:
        return None
    return (f"note: each process trains on {threads} CPU thread(s), a run alone on {alone}; the last bits of a "
            f"CPU run follow its thread count, so {len(unpinned)} run(s) without train.threads (e.g. "
            f"{unpinned[0]}) will not be bit-identical to the same run alone. To compare them bit for bit, pin "
            "train.threads in their configs, or run both with OMP_NUM_THREADS=1")


def child_command(experiment: Experiment, run: str, out: str | Path, data_root: str | Path | None,
                  threads: int) -> list[str]:
    """The command line of the process that trains and evaluates one run (this module's `main`)."""
    command = [sys.executable, "-m", "ibrar.experiments.parallel", experiment.name, run, "--scale",
               experiment.scale.name, "--seeds", str(experiment.seeds), "--out", str(out), "--threads", str(threads)]
    if data_root is not None:
        command += ["--data-root", str(data_root)]
    return command


def epoch_seconds(run_dir: Path) -> float | None:
    """The median seconds of the run's epochs (metrics.jsonl), the number to compare alone vs side by side."""
    seconds = [line["seconds"] for line in RunFolder(run_dir).metrics() if "seconds" in line]
    return round(statistics.median(seconds), 3) if seconds else None


def run_parallel(
    experiment: Experiment,
    parallel: int,
    out: str | Path = "runs",
    data_root: str | Path | None = None,
    only: Sequence[str] | None = None,
    log: Callable[[str], None] = print,
    env: dict[str, str] | None = None,
) -> Path:
    """Train and evaluate the unfinished runs, at most `parallel` processes at a time on this machine's device,
    then write results.md / results.json exactly as `run_experiment` does once every run has finished.

    Each process runs `run_spec`, as the sequential runner does: a finished run is skipped, an interrupted one
    resumes. Raises ParallelRunError naming every run that failed (the others still finish)."""
    if not isinstance(parallel, int) or parallel < 1:
        raise InputError(f"--parallel: expected a positive integer, got {parallel!r}")
    folder = experiment_dir(out, experiment)
    (folder / LOGS_DIR).mkdir(parents=True, exist_ok=True)
    todo = [spec for spec in choose_runs(experiment, only) if RunFolder(folder / spec.name).state() != "done"]
    threads = child_threads(min(parallel, max(1, len(todo))))
    record: dict[str, Any] = {"parallel": parallel, "threads_per_process": threads, "runs": {}}
    note = thread_note(todo, threads)
    if note:
        log(note)
    pending, active, failed = list(todo), [], []
    while pending or active:
        while pending and len(active) < parallel:
            spec = pending.pop(0)
            log_path = folder / LOGS_DIR / f"{spec.name}.log"
            state = RunFolder(folder / spec.name).state()
            with log_path.open("w") as stream:  # the child holds its own copy of the file descriptor
                process = subprocess.Popen(child_command(experiment, spec.name, out, data_root, threads),
                                           stdout=stream, stderr=subprocess.STDOUT, env=env)
            active.append((spec, process, time.monotonic(), log_path))
            log(f"[{len(todo) - len(pending)}/{len(todo)}] {spec.name}: {state} (process {process.pid}, "
                f"{len(active)} side by side; log {log_path})")
        time.sleep(0.2)
        for item in [a for a in active if a[1].poll() is not None]:
            active.remove(item)
            spec, process, started, log_path = item
            run_dir = folder / spec.name
            record["runs"][spec.name] = {"returncode": process.returncode,
                                         "seconds": round(time.monotonic() - started, 2),
                                         "epoch_seconds_median": epoch_seconds(run_dir),
                                         "side_by_side": min(parallel, len(todo)), "log": str(log_path)}
            if process.returncode != 0:
                failed.append(f"{spec.name} (exit code {process.returncode}; log {log_path})")
                log(f"{spec.name}: FAILED, see {log_path}")
            else:
                log(f"{spec.name}: {RunFolder(run_dir).state()} after {record['runs'][spec.name]['seconds']:.0f} s")
    (folder / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
    if failed:
        raise ParallelRunError(f"--parallel: {len(failed)} run(s) failed: {'; '.join(failed)}. Run the same "
                               "command again to resume them")
    collect_results(experiment, folder, data_root, log)
    return folder


def main(argv: list[str] | None = None) -> int:
    """One run of an experiment in this process (what each of `run_parallel`'s processes runs)."""
    from ibrar.experiments import build_experiment

    parser = argparse.ArgumentParser(description="train and evaluate one run of an experiment (for --parallel)")
    parser.add_argument("experiment")
    parser.add_argument("run")
    parser.add_argument("--scale", required=True)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--out", required=True)
    parser.add_argument("--data-root")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    experiment = build_experiment(args.experiment, args.scale, seeds=args.seeds)
    (spec,) = choose_runs(experiment, [args.run])
    run_dir = experiment_dir(args.out, experiment) / spec.name
    state = run_spec(spec, run_dir, args.data_root, quiet=True, large_eps_check=experiment.scale.large_eps_check)
    print(f"{spec.name}: found {state}; now {RunFolder(run_dir).state()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
