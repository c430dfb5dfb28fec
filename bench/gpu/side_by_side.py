"""The kit's `table4`, `table1` and `fig2` stages: several runs of one experiment at paper scale at once on the lent
GPU (all six VGG16 rows of Table 4; Table 1's PGD-AT pair; Figure 2's five networks), one process per run (each is
the `table4-ROW`, `table1-RUN` or `fig2-RUN` stage, with its own deadline, resume, evaluation and figure pieces),
and everything small they made packed into one `$OUT/<experiment>.tar.gz`, re-packed as each piece lands, so that
what comes back stays 3 files (the tarball, stage.json, stage.log) even if the call is cut off.

Processes rather than one process stepping six models: each row's results are those of the row alone
(ibrar.experiments.parallel says why), and the lease measures the cost: each row's seconds per epoch side by
side are in stage.json's `rows`, to set beside a row's alone (gpu.json of a `table4-ROW` call).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from stages import EXPERIMENTS, REPO, SIDE_BY_SIDE_ROW, Context, _metric_lines, pack_folders, tarball_name

PACK_EVERY_S = 10.0
REPORT_EVERY_S = 60.0  # each row's latest log line, so that the call's own log (the reply's tail) shows progress


def chosen_rows(rest: list[str], experiment: str = "table4") -> list[str]:
    """`table4` alone: the six rows; `table4 1,6`: those (what a lease too short for six can still finish);
    `table1`: its PGD-AT pair; `fig2`: its five networks."""
    if len(rest) > 1:
        raise SystemExit(f"error: usage: bash bench/gpu/run.sh {experiment} [ROWS] (e.g. {experiment}, or "
                         f"{experiment} {','.join(EXPERIMENTS[experiment].default_runs[:2])})")
    rows = [r.strip() for r in (rest[0] if rest else "").split(",") if r.strip()]
    return rows or list(EXPERIMENTS[experiment].default_runs)


def row_outs(ctx: Context, experiment: str = "table4") -> Path:
    """Where each row's process writes its own $OUT (on the machine's disk, not in the call's $OUT)."""
    scratch = Path(os.environ.get("IBRAR_GPU_SCRATCH", "/tmp/ibrar-gpu"))
    return scratch / f"{experiment}-rows"


def pack(outs: dict[str, Path], tarball: Path) -> int:
    """Every row's exported run folder, with that row's stage.log and stage.json inside it, into one tarball
    (`pack_folders`); the number of files packed."""
    logs = {run: [out / name for name in ("stage.log", "stage.json") if (out / name).is_file()]
            for out in outs.values() for run in sorted(p.parent for p in out.glob("*/*/config.yaml"))}
    return pack_folders(list(logs), tarball, logs)


def last_lines(log: Path, count: int) -> list[str]:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()] if log.is_file() else []
    return lines[-count:]


def row_summary(row: str, out: Path, returncode: int | None, side_by_side: int) -> dict[str, Any]:
    """What one row's process did in this call (its stage.json), and its seconds per epoch side by side."""
    record = json.loads((out / "stage.json").read_text()) if (out / "stage.json").is_file() else {}
    status = record.get("status", "running")
    if status == "running":  # the process was killed before it wrote its verdict
        status = f"stopped (exit code {returncode}) before it finished: call again"
    runs = sorted(p.parent for p in out.glob("*/*/config.yaml"))
    seconds = [line["seconds"] for run in runs for line in _metric_lines(run) if "seconds" in line]
    return {"row": row, "run": record.get("run"), "status": status, "exit_code": returncode,
            "epochs_done": record.get("epochs_done"), "epochs": record.get("epochs"),
            "epoch_seconds_median": round(statistics.median(seconds), 3) if seconds else None,
            "side_by_side": side_by_side}


def stage_side_by_side(ctx: Context, info: dict[str, Any], experiment: str,
                       rest: list[str]) -> tuple[str, dict[str, Any]]:
    rows = chosen_rows(rest, experiment)
    base = row_outs(ctx, experiment)
    outs = {row: base / row for row in rows}
    env = {**os.environ, SIDE_BY_SIDE_ROW: "1"}  # each row exports its run folder plainly, for `pack`
    # the cores shared among the rows' processes (each would take them all: 6 x 16 threads on 16 cores)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // len(rows))))
    processes: dict[str, subprocess.Popen] = {}
    for row, out in outs.items():
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        with (out / "stage.log").open("w") as log:
            command = [sys.executable, str(REPO / "bench/gpu/stages.py"), f"{experiment}-{row}"]
            processes[row] = subprocess.Popen(command, cwd=REPO, env={**env, "OUT": str(out)}, stdout=log,
                                              stderr=subprocess.STDOUT)
        print(f"== {experiment}: row {row} in process {processes[row].pid} ({out / 'stage.log'})", flush=True)

    def forward(signum: int, _frame: object) -> None:  # run.sh's SIGTERM: every row checkpoints and exports
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, forward)
    tarball = ctx.out / tarball_name(experiment)
    try:
        last_pack = last_report = time.time()
        while any(p.poll() is None for p in processes.values()):
            time.sleep(0.5)
            if time.time() - last_pack >= PACK_EVERY_S:
                with contextlib.suppress(OSError):  # a row re-exporting its folder just now: the next round packs it
                    pack(outs, tarball)
                last_pack = time.time()
            if time.time() - last_report >= REPORT_EVERY_S:
                for row, out in outs.items():
                    print(f"   row {row}: {(last_lines(out / 'stage.log', 1) or ['(no output yet)'])[0].strip()}",
                          flush=True)
                last_report = time.time()
    finally:
        signal.signal(signal.SIGTERM, previous)
    packed = pack(outs, tarball)
    summaries = [row_summary(row, outs[row], processes[row].returncode, len(rows)) for row in rows]
    for summary in summaries:
        print(f"   row {summary['row']}: {summary['status']} (epoch {summary['epochs_done']} of "
              f"{summary['epochs']}, median {summary['epoch_seconds_median']} s an epoch, {len(rows)} side by side)",
              flush=True)
        if summary["status"].startswith(("failed", "stopped (exit")):  # its traceback, here in the reply's tail
            print("\n".join(f"      | {line}" for line in last_lines(outs[summary["row"]] / "stage.log", 15)))
    unfinished = [s["row"] for s in summaries if not s["status"].startswith("finished")]
    status = "finished" if not unfinished else f"rows {','.join(unfinished)} not finished: call again"
    # a row that refused (an unknown row, a run of another config) fails the same way when called again
    if refused := [f"row {s['row']}: {s['status'].removeprefix('failed: ')}" for s in summaries
                   if s["status"].startswith("failed")]:
        status = f"failed: {'; '.join(refused)}"
    return status, {"rows": summaries, "tarball": {"name": tarball.name, "files": packed,
                                                   "bytes": tarball.stat().st_size}}
