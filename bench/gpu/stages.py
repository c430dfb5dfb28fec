"""The GPU kit's stages, one per device call (run them through bench/gpu/run.sh, which does the set-up first).

    check         the CUDA tests and bench/bench_fast_path.py on full-width VGG16 at batch 100 (cuda_check.py)
    table4 [ROWS] the six VGG16 rows of Table 4 (or those named, e.g. 1,6) side by side, one process each running
                  table4-ROW, packed into $OUT/table4.tar.gz (side_by_side.py)
    table1 [RUNS] Table 1's PGD-AT pair on CIFAR-10 (or the runs named, e.g. trades,trades-ibrar) the same way,
                  each run a table1-RUN stage (as table4-ROW, without the optimizer knob), into $OUT/table1.tar.gz
    fig2 [RUNS]   Figure 2's five networks (or those named, e.g. hbar,vib) the same way, each a fig2-RUN stage
                  (as table4-ROW, with the attack-steps curves on the whole test set), into $OUT/fig2.tar.gz
    table4-ROW    one Table 4 row at paper scale (ROW: 1..6, a row name such as 2-ib, or resnet18-6; -seedK after it
                  trains seed K, e.g. table4-6-seed1, into <run>-seedK), trained into
                  a run folder on the machine's disk until the call's time budget is spent; once trained, its
                  evaluation (the paper's attacks on the whole test set, the figures' inputs, then all the attacks
                  with AutoAttack on a seeded subset of 1,000, Table 6's adaptive attack with them for rows 1 and
                  6) -> table4-paper/<run>/{config.yaml, meta.json,
                  metrics.jsonl, info_plane.jsonl, eval.json, gpu.json, ...} (the layout of
                  results/<experiment>-<scale>/<run>/), packed into $OUT/table4.tar.gz after each piece
    fetch ROW [K] a trained row's final.pt in sha256-checked shards, from shard K (fetch.py)
    finalize      (run.sh calls it last) marks stage.json of a stage that was killed (one that refused, with
                  SystemExit, is `failed: <why>` already, with no call to repeat)

Every stage writes $OUT/stage.json (device, torch version, minutes, status, what to call next). The call's plan
(when training stops, whether this is the lease's last call) comes from three knobs: IBRAR_GPU_BUDGET_S,
IBRAR_GPU_CALL_S, IBRAR_GPU_OPTIM (bench/gpu/README.md). A rehearsal (IBRAR_GPU_KIT_REHEARSAL=1) runs the same
code on the CPU with tiny sizes: the smoke scale for Table 4, a width-1/16 VGG16 on random images for the
benchmark; the CUDA tests skip.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shlex
import shutil
import signal
import sys
import tarfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

from kit import EVAL_FULL  # noqa: E402  (bench/gpu/ is this script's folder, so first on sys.path)

# run.sh puts src/ on PYTHONPATH; these two import no pydantic, which the fetch call (installing nothing) lacks
from ibrar.run_files import CONFUSION_FILE, EVAL_FILE, FEATURES_FILE, RECORDS  # noqa: E402
from ibrar.run_folder import RunFolder  # noqa: E402

EXPORTED = (*RECORDS, FEATURES_FILE, CONFUSION_FILE)  # a run's small files and the figures' inputs
AA_SUBSET = 1000  # AutoAttack's examples (a seeded subset of the test set), as in the paper's tables
# The figures' inputs, computed where the weights are: Figure 3's t-SNE features (500 test examples, rows 1 and 6
# of VGG16) and Table 5's PGD-10 confusion counts (row 6), with the paper scale's n for the latter.
FEATURE_ROWS = ("vgg16-1-ce", "vgg16-6-ibrar")
CONFUSION_ROWS = ("vgg16-6-ibrar",)
FEATURES_N = 500
# IBRAR_GPU_OPTIM: the paper text's optimizer (the paper configs: momentum 0, decay 1e-2) or the authors' code's
# (momentum 0.9, no decay: what the paper's Table 4 numbers came from, METHOD.md section 4); the latter's run
# folders are named <run>-authors-optim, so that both can sit side by side in results/.
OPTIMIZERS = {"paper": ((), ""), "authors": (("optim.momentum=0.9", "optim.weight_decay=0"), "-authors-optim")}
NEXT_CALL_MIN_S = 150  # a budget that leaves less than this after a call makes that call the lease's last
REPLY_S = 15  # kept from the budget for each reply (the transfer back) and the next command's start


def _env_seconds(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def _piece_seconds(name: str) -> float | None:
    """What an evaluation piece must find left in the call to start: None (ibrar's estimate for this model on this
    device decides), 0 in the last call (every piece starts), or a fixed number from `name` (tests)."""
    if name in os.environ:
        return float(os.environ[name])
    return 0.0 if _last_call() else None


def _budget() -> float | None:
    """IBRAR_GPU_BUDGET_S: the lease's device time left as the last reply (or `status`) said, when given."""
    value = os.environ.get("IBRAR_GPU_BUDGET_S")
    return float(value) if value else None


def _budget_plan(budget: float) -> tuple[float, bool]:
    """(call seconds, last call) for a lease with `budget` seconds left: all of it, at most 600 s; the last call
    when what it leaves could not hold another. (Fetching a row's weights is decided call by call: a row that
    finishes in a call is fetched at once, in short calls, before the next stage.)"""
    full = max(30.0, min(600.0, budget - REPLY_S))
    return full, budget - REPLY_S - full < NEXT_CALL_MIN_S


def _call_seconds() -> float:
    """The call's length: IBRAR_GPU_CALL_S, else the budget's plan (IBRAR_GPU_BUDGET_S), else 600."""
    budget = _budget()
    return _env_seconds("IBRAR_GPU_CALL_S", 600 if budget is None else _budget_plan(budget)[0])


STAGE_END_S = 20  # run.sh's SIGTERM comes this long before the call's end


def stage_timeout_s() -> int:
    """The seconds run.sh's `timeout` gives the stage from now: until IBRAR_GPU_STAGE_TIMEOUT_S (else the call's
    length less STAGE_END_S) after the call's start (IBRAR_GPU_T0), so that a slow set-up shortens the stage instead
    of pushing it past the call's end; at least 1 (`timeout 0` would never fire)."""
    limit = _env_seconds("IBRAR_GPU_STAGE_TIMEOUT_S", _call_seconds() - STAGE_END_S)
    elapsed = time.time() - float(os.environ.get("IBRAR_GPU_T0", time.time()))
    return max(1, int(limit - elapsed))


def _last_call() -> bool:
    """No call follows in this lease: the budget's plan, or IBRAR_GPU_LAST_CALL=1 (an override)."""
    if "IBRAR_GPU_LAST_CALL" in os.environ:
        return os.environ["IBRAR_GPU_LAST_CALL"] == "1"
    budget = _budget()
    return budget is not None and _budget_plan(budget)[1]


def optimizer() -> tuple[tuple[str, ...], str]:
    """(overrides, run-name suffix) of IBRAR_GPU_OPTIM (paper, the default, or authors)."""
    name = os.environ.get("IBRAR_GPU_OPTIM", "paper")
    if name not in OPTIMIZERS:
        raise SystemExit(f"error: IBRAR_GPU_OPTIM: expected one of {list(OPTIMIZERS)}, got {name!r}")
    return OPTIMIZERS[name]


@dataclass
class Context:
    """Where a stage reads and writes, and its clock (t0: when run.sh started, set-up included)."""

    stage: str
    out: Path
    rehearsal: bool
    t0: float
    data_root: Path
    runs: Path
    # From the call's length (_call_seconds: the budget's plan, or IBRAR_GPU_CALL_S): training stops and the stage
    # ends 30 s before it (training that finishes earlier leaves the rest to the evaluation pieces; stopping sooner
    # would only move epochs to the next call); each can be set on its own as well (tests). An evaluation piece
    # starts when ibrar's estimate of it fits what the call has left (`_piece_seconds`); in the lease's last call
    # no call follows to resume in, so every piece starts whatever time is left.
    train_until: float = field(default_factory=lambda: _env_seconds("IBRAR_GPU_TRAIN_UNTIL_S", _call_seconds() - 30))
    call_limit: float = field(default_factory=lambda: _env_seconds("IBRAR_GPU_CALL_LIMIT_S", _call_seconds() - 30))
    eval_full_s: float | None = field(default_factory=lambda: _piece_seconds("IBRAR_GPU_EVAL_FULL_S"))
    eval_subset_s: float | None = field(default_factory=lambda: _piece_seconds("IBRAR_GPU_EVAL_SUBSET_S"))
    # fewer than the paper's 1,000 only when a lease cannot fit them: the entry's own n says so in eval.json
    aa_n: int = field(default_factory=lambda: int(os.environ.get("IBRAR_GPU_AA_N", AA_SUBSET)))
    figures_s: float = field(default_factory=lambda: _env_seconds("IBRAR_GPU_FIGURES_S", 0 if _last_call() else 30))

    @classmethod
    def from_env(cls, stage: str) -> Context:
        rehearsal = os.environ.get("IBRAR_GPU_KIT_REHEARSAL", "0") == "1"
        default_scratch = "/tmp/ibrar-gpu-rehearsal" if rehearsal else "/tmp/ibrar-gpu"
        scratch = Path(os.environ.get("IBRAR_GPU_SCRATCH", default_scratch))
        out = Path(os.environ.get("OUT") or scratch / "out")
        runs = Path(os.environ.get("IBRAR_GPU_RUNS", scratch / "runs" if rehearsal else "/root/gpu-runs"))
        data_root = Path(os.environ.get("IBRAR_DATA_ROOT", scratch / "data" / "cifar10-jpeg"))
        t0 = float(os.environ.get("IBRAR_GPU_T0", time.time()))
        return cls(stage, out, rehearsal, t0, data_root, runs)

    def elapsed(self) -> float:
        return time.time() - self.t0

    def remaining(self) -> float:
        return self.call_limit - self.elapsed()


# ---- stage.json --------------------------------------------------------------------------------------


def device_info() -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    return {
        "device": torch.cuda.get_device_name(0) if cuda else "CPU (no GPU: rehearsal)",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": sys.version.split()[0],
        "gpu_count": torch.cuda.device_count() if cuda else 0,
    }


def _installed_wheels() -> dict[str, list[str]]:
    kit = Path(os.environ.get("IBRAR_GPU_KIT", REPO / ".gpu-kit"))
    site = Path(os.environ.get("IBRAR_GPU_SCRATCH", "/tmp/ibrar-gpu")) / "site" / "ibrar-kit-installed.txt"
    return {"carried": sorted(p.name for p in (kit / "wheels").glob("*.whl")),
            "installed": site.read_text().split() if site.is_file() else []}


def _source() -> dict[str, Any] | None:
    path = os.environ.get("IBRAR_GPU_SOURCE")
    return json.loads(Path(path).read_text()) if path and Path(path).is_file() else None


def write_stage_json(ctx: Context, status: str, info: dict[str, Any], **extra: Any) -> dict[str, Any]:
    record = {
        "stage": ctx.stage,
        "status": status,
        "rehearsal": ctx.rehearsal,
        **info,
        "minutes": round(ctx.elapsed() / 60, 2),
        "started_utc": datetime.fromtimestamp(ctx.t0, timezone.utc).isoformat(timespec="seconds"),
        "source": _source(),
        "wheels": _installed_wheels(),
        **extra,
    }
    ctx.out.mkdir(parents=True, exist_ok=True)
    (ctx.out / "stage.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


# ---- one run at paper scale: a Table 4 row, a Table 1 run, a Figure 2 network ------------------------------


def row_and_seed(token: str) -> tuple[str, int]:
    """A row as a stage names it, and the seed to train it with: '6' -> ('6', 0), '6-seed1' -> ('6', 1)."""
    match = re.fullmatch(r"(.+?)(?:-seed(\d+))?", token)
    return match.group(1), int(match.group(2) or 0)


def run_name(name: str, suffix: str, seed: int) -> str:
    """A row's run folder: `<run><optimizer suffix>[-seed<k>]`; seed 0 has no seed part, as `ibrar reproduce` names
    a run of one seed, so that the report joins a later seed to it (`vgg16-6-ibrar-authors-optim-seed1`)."""
    return f"{name}{suffix}" + (f"-seed{seed}" if seed else "")


@dataclass(frozen=True)
class KitExperiment:
    """An experiment the kit trains at paper scale, run by run: how a stage names its runs (the run name less the
    default prefix), the runs its stage trains when none are named, and whether IBRAR_GPU_OPTIM applies."""

    prefixes: tuple[str, ...]  # run names start with one of these; a name without one gets the first
    default_runs: tuple[str, ...]
    optimizer_knob: bool
    example: str


EXPERIMENTS = {
    # Table 4: no adversarial training, where the paper text's optimizer and the authors' code's differ
    "table4": KitExperiment(("vgg16-", "resnet18-"), ("1", "2", "3", "4", "5", "6"), True, "6"),
    # Table 1 on CIFAR-10 (the kit carries no Tiny ImageNet): its AT configs are the paper text's and the authors'
    # code's alike (METHOD.md section 4), so the optimizer knob does not apply; the PGD-AT pair first (issue #26)
    "table1": KitExperiment(("vgg16-cifar10-",), ("pgd_at", "pgd_at-ibrar"), False, "pgd_at-ibrar"),
    # Figure 2: its five networks without adversarial training (CE and IB-RAR(rob) are Table 4's rows 1 and 6), each
    # evaluated with the attack-steps curves as well (the run specs' `steps`)
    "fig2": KitExperiment(("",), ("ce", "hbar", "vib", "ibrar-rob", "ibrar-all"), True, "hbar"),
}


def experiment_of(stage: str) -> tuple[str, str | None]:
    """'table4' -> ('table4', None); 'table1-pgd_at' -> ('table1', 'pgd_at'); another stage -> ('', None)."""
    for name in EXPERIMENTS:
        if stage == name:
            return name, None
        if stage.startswith(f"{name}-"):
            return name, stage.removeprefix(f"{name}-")
    return "", None


def named_by(row: str, candidates: Iterable[str], name: str = "table4") -> list[str]:
    """The run names of experiment `name` that a stage's `row` names: its whole name (the default prefix added
    where it has none) if one is, else those it begins (`6` -> `vgg16-6-ibrar`)."""
    prefixes = EXPERIMENTS[name].prefixes
    wanted = row if row.startswith(prefixes) else f"{prefixes[0]}{row}"
    candidates = list(candidates)
    return [n for n in candidates if n == wanted] or [n for n in candidates if n.startswith(f"{wanted}-")]


def find_row(experiment: Any, row: str, name: str = "table4") -> Any:
    """'1' / '1-ce' / 'vgg16-1' / 'vgg16-1-ce' / 'resnet18-6' -> the run spec of that row (VGG16 by default); of
    Table 1, 'pgd_at' / 'pgd_at-ibrar' / 'vgg16-cifar10-mart'. A whole run name wins over the runs it begins."""
    kit = EXPERIMENTS[name]
    names = [spec.name for spec in experiment.runs if spec.name.startswith(kit.prefixes)]
    matches = named_by(row, names, name)
    if len(matches) != 1:
        short = f" (or without its prefix {kit.prefixes[0]!r}, e.g. {kit.example})" if kit.prefixes[0] else ""
        raise SystemExit(f"error: {name} row {row!r}: expected one of {names}{short}")
    return next(spec for spec in experiment.runs if spec.name == matches[0])


@contextlib.contextmanager
def sigterm_stops() -> Iterator[None]:
    """A real SIGTERM (run.sh's timeout, or the side-by-side parent forwarding it) raises KeyboardInterrupt for the
    whole stage body, evaluation included, so that the stage records and exports what is done before it exits
    (the Trainer's loop installs its own handler while it trains, and puts this one back)."""

    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def reporting(run_dir: Path, every_s: float = 30.0) -> Iterator[None]:
    """While training runs, print the epochs done every `every_s` seconds (a daemon thread reading metrics.jsonl)."""
    done = threading.Event()

    def report() -> None:
        while not done.wait(every_s):
            print(f"   ... {progress(run_dir)}", flush=True)

    thread = threading.Thread(target=report, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()


def _metric_lines(run_dir: Path) -> list[dict[str, Any]]:
    return RunFolder(run_dir).metrics()


def progress(run_dir: Path) -> str:
    lines = _metric_lines(run_dir)
    if not lines:
        return "no epoch finished yet"
    last = lines[-1]
    shown = {k: round(v, 4) for k, v in last.items() if k in ("loss", "train_acc", "test_clean_acc", "seconds")
             or k.startswith("test_pgd")}
    return f"epoch {last['epoch']} done: {shown}"


def merge_evaluations(full: dict[str, Any], subset: dict[str, Any], subset_attack: str) -> dict[str, Any]:
    """eval.json of the row: the whole-test-set evaluation, plus AutoAttack's entry from the subset evaluation
    (marked with its own n) with the reference's `autoattack` block, plus the whole subset evaluation under
    subsets.n<N>."""
    merged = dict(full)
    extra = [{**entry, "n": subset["n"], "subset_seed": subset["seed"], "clean_on_subset": subset["clean"]}
             for entry in subset["attacks"] if entry["name"] == subset_attack]
    merged["attacks"] = [*full["attacks"], *extra]
    if subset.get("autoattack") is not None:  # the reference's record of that entry: version, budget, its checks
        merged["autoattack"] = subset["autoattack"]
    merged["subsets"] = {f"n{subset['n']}": subset}
    merged.setdefault("notes", []).append(
        f"{subset_attack} ran on a seeded subset of {subset['n']} of the {full['n']} test examples (seed "
        f"{subset['seed']}, clean accuracy there {subset['clean']:.2%}); its entry carries that n. worst_case is "
        f"over the attacks run on all {full['n']} examples; subsets.n{subset['n']} holds every attack, "
        f"{subset_attack} included, on the subset, with its own worst case.")
    merged["warnings"] = [*full.get("warnings", []), *(f"(subset n={subset['n']}) {w}"
                                                        for w in subset.get("warnings", []))]
    return merged


MIN_PIECE_S = 10.0  # below this left in the call, an evaluation piece is not even estimated (load, probe)


def table6_attacks(experiment: str, spec: Any, scale: Any) -> list[str]:
    """Table 6's attacks (the adaptive PGD_AD) that a run of one of its networks (Table 4's rows (1) and (6),
    Table 1's PGD-AT + IB-RAR: `table6.SOURCES`) adds to its seeded-subset piece, beside AutoAttack on the same
    examples, so that `kit.py collect` can fill Table 6 at paper scale from the weights trained for the others."""
    from ibrar.experiments import table6

    if table6.network_of(experiment, spec.group) is None:
        return []
    return [attack for attack in map(scale.attack, table6.ATTACKS) if attack not in spec.attacks]


def evaluate_row(ctx: Context, spec: Any, scale: Any, config: Any, run_dir: Path, experiment: str) -> str:
    """The two evaluation pieces (each saved as soon as it is done); 'finished' or why to call again."""
    from ibrar.data import load_split, resolve_data_root
    from ibrar.run_eval import EvaluationWouldNotFit, evaluate_run

    subset_attack = scale.attack("autoattack")
    full_file, subset_file = run_dir / EVAL_FULL, run_dir / f"eval-n{ctx.aa_n}.json"
    subset_attacks = [*spec.attacks, *table6_attacks(experiment, spec, scale)]
    test_data = None
    for path, attacks, budget in ((full_file, [a for a in spec.attacks if a != subset_attack], ctx.eval_full_s),
                                  (subset_file, subset_attacks, ctx.eval_subset_s)):
        if path.is_file():
            continue
        if path is subset_file and (waiting := figure_pieces(ctx, spec, scale, run_dir)):
            return waiting
        needed = MIN_PIECE_S if budget is None else budget
        if ctx.remaining() < needed:
            return (f"trained; evaluation ({path.name}) needs at least {needed:.0f} s and {ctx.remaining():.0f} s "
                    "are left: call again")
        if test_data is None:
            test_data = load_split(config.data.name, resolve_data_root(config.data.root or ctx.data_root), "test")
        whole = path is full_file
        n = len(test_data) if whole else min(ctx.aa_n, len(test_data))  # explicit: no default subset applies
        print(f"== evaluating {run_dir.name}: {', '.join(attacks)} on {n} test examples", flush=True)
        started = time.time()
        # Figure 2's attack-steps curves, with the paper's attacks on the whole test set (`ibrar reproduce`'s n)
        try:  # ibrar's estimate for this model on this device decides, unless a fixed budget was given (tests)
            report = evaluate_run(run_dir, data_root=ctx.data_root, attacks=attacks, n=n, seed=spec.seed,
                                  quiet=True, steps=list(spec.steps) if whole and spec.steps else None,
                                  test_data=test_data, large_eps_check=scale.large_eps_check and whole,
                                  time_limit_s=ctx.remaining() if budget is None else None)
        except EvaluationWouldNotFit as estimate:
            return (f"trained; evaluation ({path.name}) is estimated at about {estimate.seconds:.0f} s and "
                    f"{ctx.remaining():.0f} s are left: call again")
        print(report, flush=True)
        print(f"   ({time.time() - started:.0f} s)", flush=True)
        os.replace(RunFolder(run_dir).eval_file, path)
        export_run(ctx, run_dir)  # in $OUT at once: a call killed in the next piece still returns this one
    from ibrar.evaluation_record import Evaluation

    merged = merge_evaluations(json.loads(full_file.read_text()), json.loads(subset_file.read_text()), subset_attack)
    RunFolder(run_dir).write_evaluation(Evaluation.from_dict(merged, run_dir / EVAL_FILE))
    return "finished"


def figure_pieces(ctx: Context, spec: Any, scale: Any, run_dir: Path) -> str:
    """The figures' inputs of this row (FEATURE_ROWS, CONFUSION_ROWS), each saved into the run folder as soon as
    it is done, on the GPU where the weights are; '' when none is left to do, else why to call again."""
    from ibrar import figure_data as fd

    device = "cuda" if not ctx.rehearsal else "cpu"
    pieces = []
    if spec.group in FEATURE_ROWS:
        pieces.append((fd.FEATURES_FILE, lambda: fd.save_features(fd.penultimate_features(
            run_dir, ctx.data_root, min(FEATURES_N, scale.plot_n), 0, device), run_dir / fd.FEATURES_FILE)))
    if spec.group in CONFUSION_ROWS:
        pieces.append((fd.CONFUSION_FILE, lambda: fd.save_confusion(fd.confusion_counts(
            run_dir, ctx.data_root, scale.plot_n, 10, 0, device), run_dir / fd.CONFUSION_FILE)))
    for name, compute in pieces:
        if (run_dir / name).is_file():
            continue
        if ctx.remaining() < ctx.figures_s:
            return f"trained; {name} needs about {ctx.figures_s:.0f} s and {ctx.remaining():.0f} s are left: call again"
        started = time.time()
        compute()
        print(f"== {run_dir.name}: {name} ({time.time() - started:.0f} s)", flush=True)
        export_run(ctx, run_dir)
    return ""


def record_call(ctx: Context, run_dir: Path, info: dict[str, Any], status: str) -> None:
    """run_dir/gpu.json: the device, torch version and minutes of every call that worked on this run."""
    folder = RunFolder(run_dir)
    record = folder.gpu_calls() or {"calls": []}
    calls = [c for c in record["calls"] if c.get("t0") != ctx.t0]
    lines = _metric_lines(run_dir)
    calls.append({"t0": ctx.t0, "stage": ctx.stage, "device": info["device"], "torch": info["torch"],
                  "cuda": info["cuda"], "rehearsal": ctx.rehearsal,
                  "started_utc": datetime.fromtimestamp(ctx.t0, timezone.utc).isoformat(timespec="seconds"),
                  "minutes": round(ctx.elapsed() / 60, 2), "epochs_done": lines[-1]["epoch"] if lines else 0,
                  "status": status})
    record.update({k: info[k] for k in ("device", "torch", "cuda")}, calls=calls, source=_source(),
                  minutes_total=round(sum(c["minutes"] for c in calls), 2))
    run_dir.mkdir(parents=True, exist_ok=True)
    folder.write_gpu_calls(record)


SIDE_BY_SIDE_ROW = "IBRAR_GPU_SIDE_BY_SIDE_ROW"  # set by side_by_side.py for its rows' processes


def tarball_name(experiment: str) -> str:
    return f"{experiment}.tar.gz"


def pack_folders(runs: Iterable[Path], tarball: Path, logs: dict[Path, list[Path]] | None = None) -> int:
    """Each exported run folder (with the files `logs` names for it put inside it) into one tarball, written beside
    and renamed over the last one (a call cut off mid-write still has the previous); the number of files packed."""
    buffer = io.BytesIO()
    count = 0
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for run in runs:
            for path in [*sorted(run.iterdir()), *(logs or {}).get(run, [])]:
                archive.add(path, f"{run.parent.name}/{run.name}/{path.name}")
                count += 1
    tarball.parent.mkdir(parents=True, exist_ok=True)
    tmp = tarball.with_name(f".{tarball.name}.tmp")
    tmp.write_bytes(buffer.getvalue())
    os.replace(tmp, tarball)
    return count


def export_run(ctx: Context, run_dir: Path) -> Path:
    """Copy the run's small files to <experiment>-<scale>/<run>/: in a row of a side-by-side stage, under the row's
    own $OUT, which the parent packs; in a call of its own, on the machine's disk, packed into
    $OUT/<experiment>.tar.gz, since a run folder holds up to 9 files and a call returns 8 (with stage.json and
    stage.log: 3 files). Called after every piece, so that a call killed later still returns what is done."""
    own_call = SIDE_BY_SIDE_ROW not in os.environ
    base = Path(os.environ.get("IBRAR_GPU_SCRATCH", "/tmp/ibrar-gpu")) / "export" if own_call else ctx.out
    dest = base / run_dir.parent.name / run_dir.name
    shutil.rmtree(dest, ignore_errors=True)  # an export earlier in the call may hold a piece eval.json now merges
    dest.mkdir(parents=True)
    names = list(EXPORTED)
    if not RunFolder(run_dir).has_evaluation():
        names.append(EVAL_FULL)  # the whole-test-set piece alone: the lease may end before the subset's call
    for name in names:
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, dest / name)
    if own_call:
        pack_folders([dest], ctx.out / tarball_name(experiment_of(ctx.stage)[0]))
    return dest


def stage_run(ctx: Context, info: dict[str, Any], row: str, name: str = "table4") -> tuple[str, dict[str, Any]]:
    """One run of experiment `name` (EXPERIMENTS) at paper scale: trained until the call's deadline, then its
    evaluation pieces; the `table4-ROW` and `table1-RUN` stages."""
    from ibrar.config import load_config
    from ibrar.experiments import build_experiment, experiment_dir
    from ibrar.pipeline import train_and_evaluate

    scale_name = "smoke" if ctx.rehearsal else "paper"
    experiment = build_experiment(name, scale_name)
    row, seed = row_and_seed(row)
    spec = find_row(experiment, row, name)
    if seed:  # another seed of the row: trained with it, and evaluated with it (its own AutoAttack subset)
        spec = replace(spec, overrides=(*spec.overrides, f"seed={seed}"), seed=seed)
    optim_overrides, suffix = optimizer()
    if suffix and not EXPERIMENTS[name].optimizer_knob:
        raise SystemExit(f"error: IBRAR_GPU_OPTIM={os.environ['IBRAR_GPU_OPTIM']} is for Table 4's rows; {name}'s "
                         "configs hold the optimizer the paper text and the authors' code agree on: leave it unset")
    run_dir = experiment_dir(ctx.runs, experiment) / run_name(spec.name, suffix, seed)
    # IBRAR_GPU_OVERRIDES: key=value overrides on top of the row's paper config (tests; in a lease, the check's advice).
    overrides = [*spec.overrides, *optim_overrides, *os.environ.get("IBRAR_GPU_OVERRIDES", "").split()]
    config = load_config(spec.config, overrides)
    state = RunFolder(run_dir).state()
    if state in ("resume", "evaluate") and (RunFolder(run_dir).config().model_dump(mode="json")
                                            != config.model_dump(mode="json")):
        raise SystemExit(f"error: {run_dir} holds a run with another config; delete it (rm -r {run_dir})")
    where = {"run": f"{run_dir.parent.name}/{run_dir.name}", "run_dir": str(run_dir), "epochs": config.train.epochs}
    print(f"== {ctx.stage}: {run_dir.name} at {scale_name} scale in {run_dir} (found: {state})", flush=True)
    if state == "done":
        where["epochs_done"] = (_metric_lines(run_dir) or [{"epoch": 0}])[-1]["epoch"]
        export_run(ctx, run_dir)
        return "finished (already, in an earlier call)", where
    status = "finished"
    try:
        with sigterm_stops():  # training and every evaluation piece: a SIGTERM still records and exports
            if state in ("new", "resume"):
                with reporting(run_dir):  # training stops at the deadline as on SIGTERM: a checkpoint, then resume
                    train_and_evaluate(config, run_dir, data_root=ctx.data_root, evaluation=None,  # in pieces
                                       resume=state == "resume", overwrite=state == "new", quiet=True,
                                       stop_at=ctx.t0 + ctx.train_until)
                print(f"   trained: {progress(run_dir)} after {ctx.elapsed() / 60:.1f} min", flush=True)
            record_call(ctx, run_dir, info, "trained")
            export_run(ctx, run_dir)
            status = evaluate_row(ctx, spec, experiment.scale, config, run_dir, name)
    except KeyboardInterrupt as stop:
        print(f"   stopped: {stop}", flush=True)
        status = f"stopped by the call's time budget ({progress(run_dir)}): call again to continue"
    record_call(ctx, run_dir, info, status)
    where["epochs_done"] = (_metric_lines(run_dir) or [{"epoch": 0}])[-1]["epoch"]
    export_run(ctx, run_dir)
    return status, where


# ---- main --------------------------------------------------------------------------------------------

RUNTIME_MODULES = ("pydantic", "yaml", "tqdm", "numpy", "PIL", "matplotlib", "sklearn", "torchvision", "pyautoattack")


def preflight(rehearsal: bool) -> None:
    """Every module ibrar needs at run time imports (pyautoattack is needed only by the evaluation, minutes
    later: fail now, not after the training). A rehearsal only warns."""
    import importlib.util

    missing = [name for name in RUNTIME_MODULES if importlib.util.find_spec(name) is None]
    if not missing:
        return
    message = (f"not importable here: {', '.join(missing)}; carry them as wheels (bench/gpu/wheels.txt, "
               "bash bench/gpu/prepare.sh, carry: [\".gpu-kit\"])")
    if not rehearsal:
        raise SystemExit(f"error: {message}")
    print(f"rehearsal: {message}", flush=True)




def finalize(ctx: Context, rc: int) -> None:
    """After the stage's process ended: a stage.json still saying 'running' means it was killed."""
    path = ctx.out / "stage.json"
    record = json.loads(path.read_text()) if path.is_file() else {"stage": ctx.stage}
    killed = record.get("status", "running") == "running"
    if killed:
        record["status"] = f"stopped (exit code {rc}) before it finished: see stage.log; call again"
        record["next"] = next_command(ctx.stage.split())
    record["minutes"] = round(ctx.elapsed() / 60, 2)
    record["exit_code"] = rc
    ctx.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    if killed:
        print(f"== {ctx.stage}: CALL AGAIN ({record['next']}) -- {record['status']}")
    print(f"== {ctx.stage} took {record['minutes']} min in all; results in {ctx.out}")


FIX_IT = "(fix the error; see stage.log)"  # the `next` of a failed stage: the same call would fail the same way


def failed(error: SystemExit) -> str:
    """stage.json's status for a stage that refused with SystemExit: `failed: <its message>`."""
    return f"failed: {str(error.code).removeprefix('error: ')}"


def next_command(stage: list[str]) -> str:
    """The call to make next: the same stage, with the optimizer knob when it is not the default and the config
    overrides when there are any (the check's advice may set train.cuda_graph=false): a row resumes only with the
    config it started with; and IBRAR_GPU_BUDGET_S=B when this call had a budget (B: the reply's
    lease.budget_left_s, to put in by hand), since without it the next call plans a whole 600 s call."""
    knob = os.environ.get("IBRAR_GPU_OPTIM", "paper")
    prefix = f"IBRAR_GPU_OPTIM={knob} " if knob != "paper" else ""
    if overrides := os.environ.get("IBRAR_GPU_OVERRIDES", "").strip():
        prefix += f"IBRAR_GPU_OVERRIDES={shlex.quote(overrides)} "
    if _budget() is not None:
        prefix += "IBRAR_GPU_BUDGET_S=B "
    return f"{prefix}bash bench/gpu/run.sh {' '.join(stage)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", help="check, table4, table4-ROW, table1, table1-RUN, fig2, fig2-RUN, fetch, or "
                        "finalize")
    parser.add_argument("rest", nargs="*", help="(fetch) ROW [FIRST_SHARD]; (finalize) the stage it finalizes")
    parser.add_argument("--rc", type=int, default=0)
    args = parser.parse_args(argv)
    if args.stage == "finalize":
        finalize(Context.from_env(" ".join(args.rest) or "?"), args.rc)
        return 0
    stage = [args.stage, *args.rest]
    ctx = Context.from_env(" ".join(stage))
    experiment, row = experiment_of(args.stage)
    if not (args.stage in ("check", "fetch") or experiment):
        parser.error(f"stage: expected check, table4 [ROWS], table4-ROW (e.g. table4-1), table1 [RUNS], table1-RUN "
                     f"(e.g. table1-pgd_at), fig2 [RUNS], fig2-RUN or fetch ROW, got {args.stage!r}")
    try:
        if args.stage != "fetch":  # fetch cuts a file in shards: nothing of ibrar's dependencies but torch
            preflight(ctx.rehearsal)
        import torch

        if not ctx.rehearsal and not torch.cuda.is_available():
            raise SystemExit("error: no CUDA device here; on a CPU machine rehearse with IBRAR_GPU_KIT_REHEARSAL=1")
    except SystemExit as error:
        write_stage_json(ctx, failed(error), {}, next=FIX_IT)
        raise
    info = device_info()
    write_stage_json(ctx, "running", info)
    following = next_command(stage)
    try:
        if args.stage == "check":
            from cuda_check import stage_check

            status, extra = stage_check(ctx, info)
        elif row is None and experiment:
            from side_by_side import stage_side_by_side

            status, extra = stage_side_by_side(ctx, info, experiment, args.rest)
        elif args.stage == "fetch":
            import fetch

            row, first = fetch.fetch_args(args.rest)
            status, extra = fetch.stage_fetch(ctx, row, first)
            if "next_first" in extra:
                following = next_command(["fetch", row, str(extra["next_first"])])
        else:
            status, extra = stage_run(ctx, info, row, experiment)
    except SystemExit as error:  # the stage refused (an unknown row, a run of another config): calling again won't do
        write_stage_json(ctx, failed(error), info, next=FIX_IT)
        raise
    except Exception as error:
        write_stage_json(ctx, f"failed: {type(error).__name__}: {error}", info, next=FIX_IT)
        raise
    finished, refused = status.startswith("finished"), status.startswith("failed")
    extra["next"] = "" if finished else FIX_IT if refused else following
    write_stage_json(ctx, status, info, **extra)
    verdict = "FINISHED" if finished else "FAILED" if refused else f"CALL AGAIN ({extra['next']})"
    print(f"== {' '.join(stage)}: {verdict} -- {status}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
