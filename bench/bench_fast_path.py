"""The real training step (Trainer.train_epoch) of CE, PGD-AT and each + IB-RAR, per fast-path setting: ms per
step, the step's FLOP floor at the device's peak, IB-RAR's share of the step, and the host-sync check.

Run: `python bench/bench_fast_path.py [--device auto] [--width W] [--batch 100] [--batches 10] [--rounds 5]
[--budget-s S]` (with a budget, the rounds stop once S seconds have gone since the start, after at least one: the
GPU kit's check stage gives it what its call has left).
Issue #25's GPU goals for VGG16 at batch 100 on an H100 or H200 (`goals`, printed under the table, each met or
missed by how much): a CE + IB-RAR step of at most 2 ms and a PGD-AT + IB-RAR step of at most 10 ms (in the
fastest setting measured), IB-RAR adding at most 5% to the PGD-AT step in fp32 and in bf16, and so a paper-scale
Table 4 row in at most 60 s of training; and no host-device synchronisation in the step
(torch.cuda.set_sync_debug_mode("error") around the whole epoch loop). On CUDA the
settings are fp32 and bf16 + channels_last, each without and with the CUDA graph of the step (config key
`train.cuda_graph`; a build without that key says "graph: not available in this build" for those rows); on
the CPU the fast path is off, so only fp32 runs (and the sync check uses the Python-level stand-in).

The FLOP floor: torch.utils.flop_counter's registry counts one fp32 epoch of each method (every matmul and
convolution, forward and backward, the inner attack's included) and divides by the batches; the floor is that
count at the device's dense peak for the setting's arithmetic (PEAK_TFLOPS), and `x floor` is the measured step
over it (how far from the hardware's bound the step is). Configs are the paper's (Table 4 rows 1 and 6 for CE,
Table 1's PGD-AT pair) with the width, batch and number of batches set here; rounds interleave every variant so
machine noise hits them alike.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from ibrar.build import resolve_device
from ibrar.config import ConfigError, load_config
from ibrar.data import DataNotFoundError, load_split, resolve_data_root
from ibrar.host_sync import HostSyncError
from ibrar.train import Trainer
from timing import CLOCK_NOTE, timed

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "paper"
# (plain, + IB-RAR) pairs: IB-RAR's share of a step is measured against the same step without it
PAIRS = {"CE": "CE + IB-RAR", "PGD-AT": "PGD-AT + IB-RAR"}
METHODS = {"CE": "table4-vgg16-1-ce.yaml", "CE + IB-RAR": "table4-vgg16-6-ibrar.yaml",
           "PGD-AT": "table1-pgd_at.yaml", "PGD-AT + IB-RAR": "table1-pgd_at-ibrar.yaml"}
GRAPH_KEY = "train.cuda_graph"  # the CUDA graph of the step; absent from builds that predate it
SETTINGS: dict[str, list[str]] = {
    "fp32": [],
    "fp32 + graph": [],
    "bf16 + channels_last": ["train.amp=true", "train.channels_last=true"],
    "bf16 + channels_last + graph": ["train.amp=true", "train.channels_last=true"],
}
GRAPH_UNAVAILABLE = "graph: not available in this build"
# Issue #25's goals (measured here on an H100 or H200, never in a timed test)
STEP_GOALS_MS = {"CE + IB-RAR": 2.0, "PGD-AT + IB-RAR": 10.0}  # the step, in the fastest setting measured
IB_RAR_GOAL = 0.05  # at most this added to the PGD-AT step by IB-RAR, in fp32 and in bf16
ROW_STEPS = 60 * 50_000 // 100  # a paper-scale Table 4 row: 60 epochs of 50,000 images at batch 100
ROW_GOAL_S = 60.0  # of training, for one row
# Dense peaks in TFLOP/s (no structured sparsity), from NVIDIA's datasheets: "NVIDIA H100 Tensor Core GPU"
# (SXM5: FP32 67, TF32 989 / BF16 1,979 with sparsity, so 494.7 / 989.4 dense; PCIe: 51, 378, 756; NVL: 60,
# 417.5, 835) and "NVIDIA H200 Tensor Core GPU" (SXM: the H100 SXM5's compute). fp32 settings use TF32's peak
# when cuDNN may run convolutions in TF32 (torch.backends.cudnn.allow_tf32, PyTorch's default), else FP32's.
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H200": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4},
    "H100 NVL": {"fp32": 60.0, "tf32": 417.5, "bf16": 835.0},
    "H100 PCIe": {"fp32": 51.0, "tf32": 378.0, "bf16": 756.0},
    "H100": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4},  # SXM5 (any other H100 name)
}


def data_overrides(data_root: str | None, n: int, scratch: Path) -> list[str]:
    """Real CIFAR-10 when it is there; else an ImageFolder of `n` random 32x32 images (timing needs no labels)."""
    try:
        load_split("cifar10", resolve_data_root(data_root), "train")
        return [f"data.root={resolve_data_root(data_root)}"]
    except DataNotFoundError:
        rng = np.random.default_rng(0)
        for split in ("train", "test"):
            for c in range(10):
                folder = scratch / "images" / split / f"class{c}"
                folder.mkdir(parents=True, exist_ok=True)
                for i in range(-(-n // 10)):
                    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        return ["data.name=imagefolder", f"data.root={scratch / 'images'}"]


def graph_available() -> bool:
    """Whether this build's config knows train.cuda_graph (kept so the bench still runs on older checkouts)."""
    try:
        load_config(CONFIGS / METHODS["CE"], [f"{GRAPH_KEY}=false"])
    except ConfigError:
        return False
    return True


def setting_overrides(setting: str, graph: bool) -> list[str] | None:
    """The overrides of a setting, or None for a graph setting this build cannot run."""
    uses_graph = setting.endswith("+ graph")
    if uses_graph and not graph:
        return None
    return [*SETTINGS[setting], *([f"{GRAPH_KEY}={str(uses_graph).lower()}"] if graph else [])]


def peak_tflops(device_name: str, setting: str) -> tuple[float, str] | None:
    """(dense peak, the arithmetic it is for) of a setting on a known device, else None."""
    for name, peaks in PEAK_TFLOPS.items():
        if name in device_name:
            if setting.startswith("bf16"):
                return peaks["bf16"], "bf16"
            kind = "tf32" if torch.backends.cudnn.allow_tf32 else "fp32"
            return peaks[kind], kind
    return None


def build_trainer(method_file: str, overrides: list[str], run_dir: Path) -> Trainer:
    run_dir.mkdir(parents=True, exist_ok=True)
    return Trainer(load_config(CONFIGS / method_file, overrides), run_dir, quiet=True)


NOT_LAUNCHED = {"detach", "alias", "lift_fresh"}  # besides views: ops that move no data


class FlopCount(TorchDispatchMode):
    """Sums the FLOPs of every op torch's flop counter knows (matmuls, convolutions, forward and backward), and
    counts the ops that compute something (not views): each is a kernel launch or more when eager, and a node
    of a CUDA graph, so at batch 100, where most kernels are tiny, their number is what a step costs.

    FlopCounterMode itself cannot count this step: its module tracker breaks on the attacks' autograd.grad
    with respect to the input (a leaf), so this mode uses its registry alone."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0
        self.ops = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        counter = flop_registry.get(func._overloadpacket)
        if counter is not None:
            self.total += int(counter(*args, **kwargs, out_val=out))
        if not func.is_view and func._overloadpacket.__name__ not in NOT_LAUNCHED:
            self.ops += 1
        return out


def counted_epoch(trainer: Trainer, epoch: int) -> tuple[int, int]:
    """One epoch under FlopCount; its FLOPs and its ops."""
    with FlopCount() as counter:
        trainer.train_epoch(epoch)
    return counter.total, counter.ops


def sync_check(trainer: Trainer, epoch: int) -> str:
    """One more epoch of a warmed-up trainer with train.forbid_host_sync on: 'none' or the first
    synchronisation it met. Warmed up, so that compilation or graph capture is not counted as part of the step."""
    train = trainer.config.train.model_copy(update={"forbid_host_sync": True})
    trainer.config = trainer.config.model_copy(update={"train": train})
    try:
        trainer.train_epoch(epoch)
    except HostSyncError as error:
        return f"FOUND: {error}"
    return "none"


def main(argv: list[str] | None = None, so_far: dict[str, Any] | None = None) -> dict[str, Any]:
    """The benchmark's result; `so_far`, when given, holds the result of the rounds done after each one (without
    the sync check), for a caller whose time may end inside the benchmark (the GPU kit's check stage)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--width", type=float, default=None, help="default 1.0 on CUDA, 0.25 on the CPU")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--batches", type=int, default=10, help="training batches per timed epoch")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--budget-s", type=float, default=None,
                        help="stop the rounds once this many seconds have gone since the start (at least one round)")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory(prefix="ibrar-bench-") as scratch:
        return run(args, device, Path(scratch), so_far)


def run(args: argparse.Namespace, device: torch.device, scratch: Path,
        so_far: dict[str, Any] | None = None) -> dict[str, Any]:
    started = time.monotonic()
    cuda = device.type == "cuda"
    width = args.width if args.width is not None else (1.0 if cuda else 0.25)
    graph = graph_available()
    wanted = list(SETTINGS) if cuda else ["fp32"]
    settings = {s: o for s in wanted if (o := setting_overrides(s, graph)) is not None}
    n = args.batch * args.batches
    common = data_overrides(args.data_root, n, scratch) + [
        f"device={device.type}", f"model.width={width}", f"data.batch_size={args.batch}",
        f"data.train_subset={n}", "train.eval_subset=0", "train.info_plane_every=0", "train.epochs=1000",
        "train.cuda_graph=false"]  # eager unless a "+ graph" setting's own override (it comes later) says true

    trainers = {(s, m): build_trainer(f, common + extra, scratch / f"{s}-{m}".replace(" ", ""))
                for s, extra in settings.items() for m, f in METHODS.items()}
    flops: dict[str, float] = {}
    ops: dict[str, float] = {}
    for (setting, method), trainer in trainers.items():  # warm-up (and compilation, graph capture)
        if setting == "fp32":  # eager fp32: the FLOPs and ops of each method's step, counted once
            counted = counted_epoch(trainer, 0)
            flops[method], ops[method] = counted[0] / args.batches, counted[1] / args.batches
        else:
            trainer.train_epoch(0)
    seconds: dict[tuple[str, str], list[float]] = {key: [] for key in trainers}
    name = torch.cuda.get_device_name(device) if cuda else "CPU"
    rounds = 0
    while rounds < args.rounds and (rounds == 0 or args.budget_s is None
                                    or time.monotonic() - started < args.budget_s):
        rounds += 1
        for key, trainer in trainers.items():
            seconds[key].append(timed(lambda t=trainer, e=rounds: t.train_epoch(e), device) / args.batches)
        med = {key: statistics.median(v) for key, v in seconds.items()}
        if so_far is not None:
            so_far.clear()
            so_far.update(collect(settings, med, flops, name, ops), rounds=rounds,
                          unavailable=[s for s in wanted if s not in settings])

    fastest = list(settings)[-1]
    sync = sync_check(trainers[(fastest, "PGD-AT + IB-RAR")], rounds + 1)
    result = collect(settings, med, flops, name, ops)
    result["sync_free"] = float(sync == "none")
    result["rounds"] = rounds
    result["unavailable"] = [s for s in wanted if s not in settings]
    print(f"VGG16 width {width}, batch {args.batch}, {name}; the Trainer's epoch loop over {args.batches} batches "
          f"(loader, mask, inner attack, loss, IB terms, backward, SGD), median of {rounds} interleaved "
          f"rounds; {CLOCK_NOTE}")
    print(markdown(result, list(wanted)))
    print("\n" + goals_markdown(goals(result)))
    if not cuda:
        print("(train.amp, train.channels_last and the CUDA graph are the CUDA fast path: off on the CPU)")
    checks = 'torch.cuda.set_sync_debug_mode("error") + Python-level guard' if cuda else "Python-level guard"
    print(f"host-device synchronisation inside the step ({fastest}, PGD-AT + IB-RAR, one epoch, {checks}): {sync}")
    return result


def collect(settings: dict[str, list[str]], med: dict[tuple[str, str], float], flops: dict[str, float],
            device_name: str, ops: dict[str, float] | None = None) -> dict[str, Any]:
    """The flat result: step_ms/<setting>/<method>, floor_ratio/..., ib_share/<setting>/<pair>, and for the
    PGD-AT pair ib_overhead/<setting> (IB-RAR's addition over the plain step: `goals`) and speedup."""
    result: dict[str, Any] = {"device": device_name}
    for method, count in flops.items():
        result[f"gflop_per_step/{method}"] = count / 1e9
    for method, count in (ops or {}).items():
        result[f"ops_per_step/{method}"] = count
    base = med[("fp32", "PGD-AT")]
    for setting in settings:
        peak = peak_tflops(device_name, setting)
        if peak is not None:
            result[f"peak_tflops/{setting}"] = f"{peak[0]:g} ({peak[1]})"
        for method in METHODS:
            step = med[(setting, method)]
            result[f"step_ms/{setting}/{method}"] = step * 1000
            if peak is not None and flops.get(method):
                result[f"floor_ratio/{setting}/{method}"] = step / (flops[method] / (peak[0] * 1e12))
        for plain, with_ib in PAIRS.items():
            result[f"ib_share/{setting}/{plain}"] = 1 - med[(setting, plain)] / med[(setting, with_ib)]
        result[f"ib_overhead/{setting}"] = med[(setting, "PGD-AT + IB-RAR")] / med[(setting, "PGD-AT")] - 1
        result[f"speedup/{setting}"] = base / med[(setting, "PGD-AT")]
    return result


def _fastest(result: dict[str, Any], method: str, prefix: str = "") -> tuple[str, float] | None:
    """(setting, ms) of the fastest measured setting (of those starting with `prefix`) for `method`."""
    measured = [(result[key], key.split("/")[1]) for key in result
                if key.startswith("step_ms/") and key.endswith(f"/{method}") and key.split("/")[1].startswith(prefix)]
    if not measured:
        return None
    ms, setting = min(measured)
    return setting, ms


def goals(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue #25's goals, each judged on the setting a user would pick (the fastest; for IB-RAR's addition, the
    fastest of each precision), with the measurement, the goal and how far from it: `times` is measured / goal."""
    judged = []
    for method, goal in STEP_GOALS_MS.items():
        if (best := _fastest(result, method)) is not None:
            judged.append({"goal": f"{method} step", "setting": best[0], "measured": best[1], "target": goal,
                           "unit": "ms"})
    if (best := _fastest(result, "CE + IB-RAR")) is not None:  # the step alone: no per-epoch work counted
        judged.append({"goal": "Table 4 row's training (the step x 30,000, estimated)", "setting": best[0],
                       "measured": best[1] * ROW_STEPS / 1000, "target": ROW_GOAL_S, "unit": "s"})
    for precision in ("fp32", "bf16"):
        if (best := _fastest(result, "PGD-AT + IB-RAR", precision)) is not None:
            judged.append({"goal": f"IB-RAR's addition to the PGD-AT step ({precision})", "setting": best[0],
                           "measured": result[f"ib_overhead/{best[0]}"], "target": IB_RAR_GOAL, "unit": "share"})
    for entry in judged:
        entry["met"] = entry["measured"] <= entry["target"]
        entry["times"] = entry["measured"] / entry["target"]
    return judged


def goals_markdown(judged: list[dict[str, Any]]) -> str:
    """The goals as a table, each met or missed by how much."""
    def shown(value: float, unit: str) -> str:
        return f"{value:+.1%}" if unit == "share" else f"{value:.1f} {unit}"

    lines = ["| goal (issue #25, H100 or H200) | setting | measured | goal | verdict |",
             "| --- | --- | ---: | ---: | --- |"]
    for e in judged:
        if e["met"]:
            verdict = "met"
        elif e["unit"] == "share":
            verdict = f"missed by {(e['measured'] - e['target']) * 100:.1f} points"
        else:
            verdict = f"missed: {e['times']:.1f}x the goal"
        lines.append(f"| {e['goal']} | {e['setting']} | {shown(e['measured'], e['unit'])} | "
                     f"{'at most ' + shown(e['target'], e['unit']).lstrip('+')} | {verdict} |")
    return "\n".join(lines)


def markdown(result: dict[str, Any], settings: list[str]) -> str:
    """The result as a table: one line per setting and method (what the GPU kit's check.md shows)."""
    lines = ["| setting | method | ms/step | x FLOP floor | IB-RAR share of the step |",
             "| --- | --- | ---: | ---: | ---: |"]
    for setting in settings:
        if f"step_ms/{setting}/CE" not in result:
            lines.append(f"| {setting} | (all) | {GRAPH_UNAVAILABLE} | | |")
            continue
        for method in METHODS:
            ratio = result.get(f"floor_ratio/{setting}/{method}")
            share = result.get(f"ib_share/{setting}/{method.removesuffix(' + IB-RAR')}") if method not in PAIRS \
                else None
            lines.append(f"| {setting} | {method} | {result[f'step_ms/{setting}/{method}']:.1f} | "
                         f"{'n/a (no peak known)' if ratio is None else f'{ratio:.1f}x'} | "
                         f"{'' if share is None else f'{share:.1%}'} |")
    floors = [f"{method} {result[f'gflop_per_step/{method}']:.3g}" for method in METHODS
              if f"gflop_per_step/{method}" in result]
    peaks = [f"{s}: {result[f'peak_tflops/{s}']}" for s in settings if f"peak_tflops/{s}" in result]
    counts = [f"{method} {result[f'ops_per_step/{method}']:.0f}" for method in METHODS
              if f"ops_per_step/{method}" in result]
    added = [f"{plain} +{result[f'ops_per_step/{with_ib}'] - result[f'ops_per_step/{plain}']:.0f}"
             for plain, with_ib in PAIRS.items() if f"ops_per_step/{with_ib}" in result]
    if counts:
        lines += ["", f"Ops per step (fp32 eager, views not counted; each a launch, or a node of a CUDA graph): "
                      f"{', '.join(counts)}; IB-RAR adds {', '.join(added)}."]
    lines += ["", f"GFLOP per step (torch.utils.flop_counter, fp32 eager): {', '.join(floors)}.",
              f"Dense peak TFLOP/s used for the floor: {'; '.join(peaks) or 'none known for this device'}."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
