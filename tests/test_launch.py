"""`ibrar reproduce --launcher`: runs as submitit jobs. The local launcher runs real subprocesses through
submitit's local executor and leaves what a plain run leaves; a preempted job is requeued and resumes from its
checkpoint; on SLURM (faked `sbatch`/`srun` here) one job array is submitted and a second call collects."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import stat
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import tiny_config
from ibrar.checkpoint import load_file
from ibrar.cli import main
from ibrar.config import load_config
from ibrar.experiments import build_experiment, run_experiment
from ibrar.experiments.base import RunSpec
from ibrar.experiments.launch import SUBMITIT_DIR, LaunchOptions, RunJob, launch_experiment, make_executor
from ibrar.run_folder import RunFolder
from ibrar.train import train

pytest.importorskip("submitit")


def _eval_numbers(run_dir: Path) -> dict:
    result = json.loads((run_dir / "eval.json").read_text())
    return {"clean": result["clean"], "worst_case": result["worst_case"],
            "attacks": {a["name"]: a["accuracy"] for a in result["attacks"]}}


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "final.pt")["model"]


def test_local_launcher_leaves_the_same_results_as_a_plain_run(image_folder, tmp_path, capsys):
    """One run through a real subprocess (submitit's local executor), the rest plainly: the same results."""
    local, plain = tmp_path / "local", tmp_path / "plain"
    common = ["reproduce", "table4", "--scale", "smoke", "--data-root", str(image_folder), "--quiet"]
    assert main([*common, "--out", str(local), "--launcher", "local", "--only", "vgg16-6-ibrar"]) == 0
    job_logs = list((local / "table4-smoke" / SUBMITIT_DIR).glob("*_log.out"))
    assert job_logs and "Job completed successfully" in job_logs[0].read_text()
    assert main([*common, "--out", str(local)]) == 0  # a second call runs what is left and collects
    assert main([*common, "--out", str(plain)]) == 0
    capsys.readouterr()
    ours, theirs = local / "table4-smoke", plain / "table4-smoke"
    assert _eval_numbers(ours / "vgg16-6-ibrar") == _eval_numbers(theirs / "vgg16-6-ibrar")
    a, b = _weights(ours / "vgg16-6-ibrar"), _weights(theirs / "vgg16-6-ibrar")
    assert all(torch.equal(a[k], b[k]) for k in b)
    results = [json.loads((folder / "results.json").read_text())["tables"] for folder in (ours, theirs)]
    assert results[0] == results[1]


def _spec(tmp_path: Path, image_folder: Path, epochs: int) -> RunSpec:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config(image_folder, train={"epochs": epochs, "eval_pgd_steps": 0,
                                                                      "info_plane_every": 0})))
    return RunSpec("tiny", "tiny", config, (), ("fgsm",), 8)


def test_a_preempted_job_is_requeued_and_resumes_from_its_checkpoint(image_folder, tmp_path):
    spec = _spec(tmp_path, image_folder, epochs=12)
    run_dir = tmp_path / "runs" / "tiny"
    executor = make_executor(tmp_path / "runs", LaunchOptions("local", time_min=30), "ibrar-test")
    job = executor.submit(RunJob(spec, run_dir, None, large_eps_check=False, threads=1))
    deadline = time.monotonic() + 300
    while not (run_dir / "checkpoint.pt").is_file():  # the first epoch has ended: the job is training
        assert time.monotonic() < deadline and not job.done(), job.stderr()
        time.sleep(0.05)
    # The preemption signal (SIGUSR2, what submitit asks SLURM to send) goes to the job's task, the process
    # the local executor's controller started; submitit's handler there checkpoints and requeues the job.
    controller = job._process.pid
    (task,) = Path(f"/proc/{controller}/task/{controller}/children").read_text().split()
    os.kill(int(task), signal.SIGUSR2)
    assert job.result() == "resume"  # the requeued job found a half-done run and resumed it
    assert "requeued, it resumes from" in job.stdout()
    epochs = [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, 13)) and RunFolder(run_dir).state() == "done"
    # The same run uninterrupted, in this process with the same thread count: bit-identical weights.
    torch.set_num_threads(1)
    reference = tmp_path / "reference"
    train(load_config(spec.config), reference, quiet=True)
    a, b = _weights(run_dir), _weights(reference)
    assert all(torch.equal(a[k], b[k]) for k in b)


def test_the_checkpoint_hook_resubmits_the_same_run(image_folder, tmp_path):
    job = RunJob(_spec(tmp_path, image_folder, 1), tmp_path / "run", "data", large_eps_check=False, threads=2)
    delayed = job.checkpoint()
    again = delayed.function
    assert isinstance(again, RunJob) and again is not job
    assert (again.spec, again.run_dir, again.data_root, again.threads) == (job.spec, job.run_dir, "data", 2)


@pytest.fixture()
def fake_slurm(tmp_path, monkeypatch) -> Path:
    """`srun` and `sbatch` stand-ins on PATH; sbatch keeps each script it is given and answers with a job id."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = tmp_path / "sbatch-scripts"
    scripts.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\nn=$(ls {scripts} | wc -l)\ncp "$1" {scripts}/script$n.sh\n'
                                    'echo "Submitted batch job $((4200 + n))"\n')
    for tool in ("srun", "sbatch"):
        (bin_dir / tool).chmod((bin_dir / tool).stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return scripts


def test_slurm_launcher_submits_one_array_and_a_second_call_collects(image_folder, tmp_path, fake_slurm,
                                                                     monkeypatch):
    experiment = build_experiment("table6", "smoke")
    options = LaunchOptions("slurm", partition="gpu", time_min=90, gpus_per_job=2, array_parallelism=2)
    lines: list[str] = []
    folder = launch_experiment(experiment, options, tmp_path, image_folder, log=lines.append)
    (script,) = fake_slurm.iterdir()
    text = script.read_text()
    for directive in ("--partition=gpu", "--time=90", "--gpus-per-node=2", "--ntasks-per-node=2",
                      "--array=0-2%2", "--signal=USR2@"):
        assert f"#SBATCH {directive}" in text
    jobs = json.loads((folder / SUBMITIT_DIR / "jobs.json").read_text())
    assert jobs == {"plain-ce": "4200_0", "plain-ibrar": "4200_1", "at-ibrar": "4200_2"}
    assert "run the same command again" in lines[-2] and "0 of 3 runs have finished" in lines[-1]

    # Second call while the jobs still run: nothing is submitted again.
    monkeypatch.setattr("ibrar.experiments.launch._slurm_state", lambda _folder, _job: "RUNNING")
    lines.clear()
    launch_experiment(experiment, options, tmp_path, image_folder, log=lines.append)
    assert len(list(fake_slurm.iterdir())) == 1 and "still queued or running" in lines[0]

    # The jobs have finished (here the runs are made plainly): the next call writes the results, submits nothing.
    run_experiment(experiment, tmp_path, image_folder, quiet=True, log=lambda _line: None)
    (folder / "results.md").unlink()
    monkeypatch.setattr("ibrar.experiments.launch._slurm_state", lambda _folder, _job: "COMPLETED")
    lines.clear()
    launch_experiment(experiment, options, tmp_path, image_folder, log=lines.append)
    assert len(list(fake_slurm.iterdir())) == 1 and (folder / "results.md").is_file()
    assert lines[-1].startswith("results: ")


def test_a_failed_slurm_job_is_submitted_again_on_the_next_call(image_folder, tmp_path, fake_slurm, monkeypatch):
    experiment = build_experiment("table6", "smoke")
    options = LaunchOptions("slurm")
    launch_experiment(experiment, options, tmp_path, image_folder, log=lambda _line: None)
    states = {"4200_0": "FAILED", "4200_1": "RUNNING", "4200_2": "PENDING"}
    monkeypatch.setattr("ibrar.experiments.launch._slurm_state", lambda _folder, job: states[job])
    launch_experiment(experiment, options, tmp_path, image_folder, log=lambda _line: None)
    second = sorted(fake_slurm.iterdir())[1].read_text()
    assert "#SBATCH --array" not in second  # a single job this time
    jobs = json.loads((tmp_path / "table6-smoke" / SUBMITIT_DIR / "jobs.json").read_text())
    assert jobs["plain-ce"] == "4201" and jobs["plain-ibrar"] == "4200_1"


def test_slurm_without_slurm_and_bad_options_are_one_message(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun anywhere
    code = main(["reproduce", "table6", "--scale", "smoke", "--out", str(tmp_path), "--launcher", "slurm"])
    assert code == 2 and "--launcher local" in capsys.readouterr().err
    code = main(["reproduce", "table6", "--scale", "smoke", "--launcher", "local", "--array-parallelism", "0"])
    assert code == 2 and "--array-parallelism: expected a positive integer" in capsys.readouterr().err


def test_a_job_with_two_tasks_trains_one_ddp_run(image_folder, tmp_path):
    """Several tasks per job (one per GPU on a cluster) join one DistributedDataParallel run, as under
    torchrun; here two CPU tasks of the local executor over gloo. Rank 0 alone evaluates."""
    spec = _spec(tmp_path, image_folder, epochs=1)
    run_dir = tmp_path / "runs" / "tiny"
    options = LaunchOptions("local", time_min=30, tasks_per_job=2)
    job = make_executor(tmp_path / "runs", options, "ibrar-ddp").submit(
        RunJob(spec, run_dir, None, large_eps_check=False, threads=1))
    assert job.results() == ["new", "trained"]  # rank 0 trained and evaluated, rank 1 trained
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["world_size"] == 2 and RunFolder(run_dir).state() == "done"


def _metrics_without_timings(run_dir: Path) -> list[dict]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if k != "seconds"} for line in lines]


def test_parallel_runs_side_by_side_leave_what_each_run_alone_leaves(image_folder, tmp_path, capsys, monkeypatch):
    """`--parallel 2`: two processes at once; each run's weights, metrics and evaluation equal the same run's
    trained alone in this process with the same thread count (one)."""
    from ibrar.experiments.parallel import RECORD_FILE

    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)  # each process gets max(1, 1 // 2) = 1 thread
    torch.set_num_threads(1)
    runs = "vgg16-1-ce,vgg16-6-ibrar"
    common = ["reproduce", "table4", "--scale", "smoke", "--data-root", str(image_folder), "--only", runs]
    assert main([*common, "--out", str(tmp_path / "side"), "--parallel", "2"]) == 0
    record = json.loads((tmp_path / "side" / "table4-smoke" / RECORD_FILE).read_text())
    assert record["threads_per_process"] == 1 and sorted(record["runs"]) == sorted(runs.split(","))
    assert all(r["returncode"] == 0 and r["side_by_side"] == 2 and r["epoch_seconds_median"] > 0
               for r in record["runs"].values())
    assert "2 side by side" in capsys.readouterr().out
    for name in runs.split(","):
        assert main([*common[:-1], name, "--out", str(tmp_path / "alone"), "--quiet"]) == 0
        side, alone = tmp_path / "side" / "table4-smoke" / name, tmp_path / "alone" / "table4-smoke" / name
        a, b = _weights(side), _weights(alone)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in b)
        assert _metrics_without_timings(side) == _metrics_without_timings(alone)
        assert _eval_numbers(side) == _eval_numbers(alone)
    # a second call finds both runs finished and starts no process
    lines: list[str] = []
    from ibrar.experiments.parallel import run_parallel

    run_parallel(build_experiment("table4", "smoke"), 2, tmp_path / "side", image_folder,
                 only=runs.split(","), log=lines.append)
    assert not any("process" in line for line in lines)


def test_parallel_names_a_failed_run_and_its_log(tmp_path, monkeypatch):
    from ibrar.experiments.parallel import ParallelRunError, run_parallel

    code = main(["reproduce", "table6", "--scale", "smoke", "--parallel", "2", "--launcher", "local"])
    assert code == 2
    with pytest.raises(ParallelRunError, match=r"plain-ce \(exit code 1; log .*plain-ce\.log\)"):
        # no images anywhere: every process fails on its data, and each is named
        run_parallel(build_experiment("table6", "smoke"), 2, tmp_path, tmp_path / "no-data", only=["plain-ce"],
                     log=lambda _line: None)
    assert "Error" in (tmp_path / "table6-smoke" / "parallel-logs" / "plain-ce.log").read_text()


def test_parallel_says_when_cpu_threads_keep_a_run_from_matching_it_alone(monkeypatch):
    from ibrar.experiments.parallel import child_threads, thread_note

    experiment = build_experiment("table4", "smoke")
    runs = list(experiment.runs[:2])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    note = thread_note(runs, child_threads(2))
    assert note and "2 CPU thread(s), a run alone on 4" in note
    assert f"2 run(s) without train.threads (e.g. {runs[0].name})" in note
    pinned = [dataclasses.replace(spec, overrides=(*spec.overrides, "train.threads=2")) for spec in runs]
    assert thread_note(pinned, 2) is None  # each trains on its own pinned count, alone or side by side
    assert thread_note(runs, 4) is None  # as many threads as alone
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert thread_note(runs, child_threads(2)) is None  # one thread alone, one side by side
