"""An experiment's runs as cluster jobs through submitit (`pip install 'ibrar[slurm]'`): one job per run, a
SLURM job array, waiting or returning; calling again collects the results exactly as after a local run.

Each job calls the runner's own `run_spec` (train or resume, then evaluate), so a job that dies, is cancelled,
or is preempted resumes its run from `checkpoint.pt`: submitit calls `RunJob.checkpoint` on the preemption
or timeout signal and requeues the job, and the requeued job finds the run half done. With several tasks per
job (one per GPU) the tasks join one DistributedDataParallel run, as under torchrun. The `local` launcher is
submitit's local executor (real subprocesses on this machine): the same code path without SLURM.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ibrar.errors import InputError
from ibrar.experiments.base import (
    Experiment,
    RunSpec,
    choose_runs,
    collect_results,
    experiment_dir,
    run_spec,
)
from ibrar.run_folder import RunFolder

LAUNCHERS = ("slurm", "local")
SUBMITIT_DIR = "submitit"  # <experiment folder>/submitit/: submitit's pickles and each job's logs
JOBS_FILE = "jobs.json"  # run name -> SLURM job id, so that a second call does not submit a running run again
# SLURM states of a job that may still write to its run folder.
ACTIVE_STATES = frozenset({"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED",
                           "RESIZING", "REQUEUE_HOLD", "REQUEUE_FED", "PREEMPTED", "UNKNOWN"})


@dataclass(frozen=True)
class LaunchOptions:
    """Where and how the jobs run: submitit's executor parameters, and whether to wait for the jobs."""

    launcher: str = "local"
    partition: str | None = None
    time_min: int = 240
    gpus_per_job: int | None = None  # None: 1 on SLURM, 0 locally
    tasks_per_job: int | None = None  # None: one per GPU (at least one), as torchrun --nproc_per_node would
    cpus_per_task: int | None = None
    array_parallelism: int | None = None  # None: 256 on SLURM (submitit's default), 1 locally
    wait: bool = False

    def __post_init__(self) -> None:
        if self.launcher not in LAUNCHERS:
            raise InputError(f"--launcher: expected one of {list(LAUNCHERS)}, got {self.launcher!r}")
        for name, option in (("time_min", "--time"), ("tasks_per_job", "--tasks-per-job"),
                             ("cpus_per_task", "--cpus-per-task"), ("array_parallelism", "--array-parallelism")):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise InputError(f"{option}: expected a positive integer, got {value!r}")
        if self.gpus_per_job is not None and self.gpus_per_job < 0:
            raise InputError(f"--gpus-per-job: expected 0 or more, got {self.gpus_per_job}")

    @property
    def gpus(self) -> int:
        return self.gpus_per_job if self.gpus_per_job is not None else int(self.launcher == "slurm")

    @property
    def tasks(self) -> int:
        return self.tasks_per_job or max(1, self.gpus)

    @property
    def parallelism(self) -> int:
        return self.array_parallelism or (256 if self.launcher == "slurm" else 1)


class RunJob:
    """One run as a submitit job: train (or resume) it and evaluate it; checkpointable, so requeued on
    preemption. `threads` pins torch's CPU threads (the local launcher passes the caller's)."""

    def __init__(self, spec: RunSpec, run_dir: Path, data_root: str | Path | None, large_eps_check: bool,
                 threads: int | None = None) -> None:
        self.spec = spec
        self.run_dir = Path(run_dir)
        self.data_root = data_root
        self.large_eps_check = large_eps_check
        self.threads = threads

    def __call__(self) -> str:
        """The run's state when the job started ('new', 'resume', 'evaluate', 'done'); 'trained' on rank > 0."""
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        rank, world_size = _join_job_tasks()
        if world_size > 1:  # every task trains (DDP, as under torchrun); rank 0 alone evaluates
            from ibrar.distributed import shutdown

            found = run_spec(self.spec, self.run_dir, self.data_root, quiet=True,
                             large_eps_check=self.large_eps_check, evaluate=False)
            shutdown()
            if rank != 0:
                return "trained"
            run_spec(self.spec, self.run_dir, self.data_root, quiet=True, large_eps_check=self.large_eps_check)
            return found
        return run_spec(self.spec, self.run_dir, self.data_root, quiet=True, large_eps_check=self.large_eps_check)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit's preemption/timeout hook: requeue the same run; it resumes from its last checkpoint."""
        from submitit.helpers import DelayedSubmission

        print(f"ibrar: run {self.spec.name} was preempted or timed out; requeued, it resumes from "
              f"{RunFolder(self.run_dir).checkpoint_file}", flush=True)
        return DelayedSubmission(RunJob(self.spec, self.run_dir, self.data_root, self.large_eps_check,
                                        self.threads))


def _join_job_tasks() -> tuple[int, int]:
    """(rank, world size) of this task; with several tasks, export the env:// variables DDP reads."""
    import submitit

    env = submitit.JobEnvironment()
    if env.num_tasks <= 1:
        return 0, 1
    # Every task sees every GPU: the trainer picks cuda:LOCAL_RANK, as under torchrun.
    submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    return env.global_rank, env.num_tasks


def make_executor(folder: Path, options: LaunchOptions, name: str) -> Any:
    """submitit's executor for the experiment folder, with the options as its parameters."""
    try:
        import submitit
    except ImportError:
        raise InputError("--launcher needs submitit; install it with `pip install 'ibrar[slurm]'`") from None
    try:
        executor = submitit.AutoExecutor(folder=folder / SUBMITIT_DIR, cluster=options.launcher)
    except RuntimeError as err:  # submitit's "Could not detect srun": not on a SLURM cluster
        raise InputError(f"--launcher {options.launcher}: {err} Submit from the cluster's login node, or use "
                         "--launcher local to run the jobs here") from None
    params: dict[str, Any] = {"name": name, "timeout_min": options.time_min, "gpus_per_node": options.gpus,
                              "tasks_per_node": options.tasks, "nodes": 1}
    if options.cpus_per_task:
        params["cpus_per_task"] = options.cpus_per_task
    if options.launcher == "slurm":
        params["slurm_array_parallelism"] = options.parallelism
        if options.partition:
            params["slurm_partition"] = options.partition
    executor.update_parameters(**params)
    return executor


def _read_jobs(folder: Path) -> dict[str, str]:
    path = folder / SUBMITIT_DIR / JOBS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _write_jobs(folder: Path, jobs: dict[str, str]) -> None:
    path = folder / SUBMITIT_DIR / JOBS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(jobs, indent=2))


def _slurm_state(folder: Path, job_id: str) -> str:
    import submitit

    try:
        return str(submitit.SlurmJob(folder=folder / SUBMITIT_DIR, job_id=job_id).state).upper()
    except Exception:  # sacct missing or failing: the job may still run, so it counts as active
        return "UNKNOWN"


def launch_experiment(
    experiment: Experiment,
    options: LaunchOptions,
    out: str | Path = "runs",
    data_root: str | Path | None = None,
    only: Sequence[str] | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Submit one job per unfinished run (unless its job is still queued or running), wait if asked (the local
    launcher always waits), then write results.md / results.json once every run has finished, exactly as
    `run_experiment` does. Call it again to collect the results of jobs that were left running."""
    import torch

    folder = experiment_dir(out, experiment)
    folder.mkdir(parents=True, exist_ok=True)
    chosen = choose_runs(experiment, only)
    jobs = _read_jobs(folder) if options.launcher == "slurm" else {}
    running, todo = [], []
    for spec in chosen:
        state = RunFolder(folder / spec.name).state()
        if state == "done":
            continue
        job_id = jobs.get(spec.name)
        if job_id is not None and _slurm_state(folder, job_id) in ACTIVE_STATES:
            running.append(f"{spec.name} (job {job_id})")
        else:
            todo.append(spec)
    if running:
        log(f"still queued or running, not submitted again: {', '.join(running)}")
    threads = torch.get_num_threads() if options.launcher == "local" else None
    large_eps = experiment.scale.large_eps_check
    work = [RunJob(spec, folder / spec.name, data_root, large_eps, threads) for spec in todo]
    executor = make_executor(folder, options, f"ibrar-{experiment.name}-{experiment.scale.name}") if work else None
    if options.launcher == "slurm" and work:
        with executor.batch():
            submitted = [executor.submit(job) for job in work]
        jobs.update({job.spec.name: sub.job_id for job, sub in zip(work, submitted, strict=True)})
        _write_jobs(folder, jobs)
        log(f"submitted {len(submitted)} jobs to SLURM (array {submitted[0].job_id.split('_')[0]}); logs in "
            f"{folder / SUBMITIT_DIR}")
        if options.wait:
            _wait(list(zip(work, submitted, strict=True)), log)
        else:
            log("run the same command again to collect the results once the jobs have finished")
    elif work:
        _run_locally(executor, work, options.parallelism, log)
    collect_results(experiment, folder, data_root, log)
    return folder


def _run_locally(executor: Any, work: list[RunJob], parallelism: int, log: Callable[[str], None]) -> None:
    """At most `parallelism` local jobs at a time; each is a real subprocess, requeued on preemption."""
    pending, active = list(work), []
    while pending or active:
        while pending and len(active) < parallelism:
            job = pending.pop(0)
            active.append((job, executor.submit(job)))
            log(f"[local job {active[-1][1].job_id}] {job.spec.name}: {RunFolder(job.run_dir).state()}")
        finished = [pair for pair in active if pair[1].done()]
        if not finished:
            time.sleep(0.2)
            continue
        for pair in finished:
            active.remove(pair)
        _wait(finished, log)


def _wait(pairs: list[tuple[RunJob, Any]], log: Callable[[str], None]) -> None:
    """Wait for the jobs; a failed job is reported with its log file, the others still count."""
    for job, submitted in pairs:
        try:
            submitted.result()
        except Exception as err:  # submitit's FailedJobError/UncompletedJobError hold the job's traceback
            last = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
            log(f"{job.spec.name}: job {submitted.job_id} failed ({last}); log: {submitted.paths.stderr}. "
                "Run the same command again to resume it")
