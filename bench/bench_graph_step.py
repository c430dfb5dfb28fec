"""The training step replayed as CUDA graphs against the eager step (ibrar.graph_step): milliseconds per step of
Table 4's CE + IB-RAR and Table 1's PGD-AT + IB-RAR (VGG16, batch 100), against issue 25's goals.

Run: `python bench/bench_graph_step.py [--device auto] [--width W] [--batch 100] [--steps 60]`. Batches are on the
device before timing (the loader is not timed); the mask rescores on every 10th, as in training, so the mean
includes its refresh graph. On the CPU it times the eager step only, at a small width (capture is CUDA's).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fast_path import METHODS, STEP_GOALS_MS, build_trainer, data_overrides  # noqa: E402
from ibrar.build import resolve_device  # noqa: E402
from ibrar.graph_step import CUDA_GRAPH_WARMUP, GraphStep  # noqa: E402
from ibrar.metrics import EpochStats  # noqa: E402
from ibrar.taps import tap_layers  # noqa: E402
from ibrar.train import Trainer  # noqa: E402
from timing import CLOCK_NOTE, timed  # noqa: E402

# Issue 25's goals on an H100 (ms per step at batch 100, VGG16 full width), with IB-RAR's terms and mask on.
GOALS_MS = {method: (METHODS[method], goal) for method, goal in STEP_GOALS_MS.items()}


def step_ms(trainer: Trainer, capture: bool, steps: int) -> tuple[float, GraphStep]:
    """Mean ms of `steps` timed steps, after enough untimed ones that both graphs (refresh, plain) exist."""
    trainer.train_loader.set_epoch(0)
    batches = list(trainer.train_loader)
    warm = 2 * trainer.config.mask.refresh_every * (CUDA_GRAPH_WARMUP + 1)
    if len(batches) < warm + steps:
        raise ValueError(f"steps: need {warm + steps} batches, the subset gives {len(batches)}")
    generator = torch.Generator(device=trainer.device).manual_seed(0)
    with tap_layers(trainer.train_model, trainer._tapped_layers()) as taps:
        runner = GraphStep(trainer.train_step(taps), EpochStats(trainer.device), generator, capture=capture)
        for x, y in batches[:warm]:
            runner(x, y)

        def timed_steps() -> None:
            for x, y in batches[warm:warm + steps]:
                runner(x, y)

        seconds = timed(timed_steps, trainer.device)
    return 1000 * seconds / steps, runner


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--width", type=float, default=None, help="default 1.0 on CUDA, 0.0625 on the CPU")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--steps", type=int, default=60, help="timed steps per method and setting")
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    width = args.width if args.width is not None else (1.0 if cuda else 0.0625)
    result: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="ibrar-bench-") as scratch:
        n = args.batch * (args.steps + 60)
        common = data_overrides(args.data_root, n, Path(scratch)) + [
            f"device={device.type}", f"model.width={width}", f"data.batch_size={args.batch}",
            f"data.train_subset={n}", "train.eval_subset=0", "train.info_plane_every=0", "data.augment=false"]
        name = torch.cuda.get_device_name(device) if cuda else "CPU"
        print(f"VGG16 width {width}, batch {args.batch}, {name}; mean of {args.steps} steps; {CLOCK_NOTE}")
        for method, (config, goal) in GOALS_MS.items():
            trainer = build_trainer(config, common, Path(scratch) / method.replace(" ", ""))
            eager, _ = step_ms(trainer, capture=False, steps=args.steps)
            result[f"step_ms/{method}/eager"] = eager
            line = f"  {method:16s} eager {eager:8.2f} ms/step"
            if cuda:
                graphed, runner = step_ms(trainer, capture=True, steps=args.steps)
                result[f"step_ms/{method}/cuda_graph"] = graphed
                verdict = "met" if graphed <= goal else "not met"
                line += (f"   CUDA graphs {graphed:8.2f} ms/step ({eager / graphed:4.1f}x; goal {goal:g} ms: "
                         f"{verdict}; {runner.replays} replays"
                         + (f"; eager after a failed capture: {runner.failures}" if runner.failures else "") + ")")
            print(line)
    if not cuda:
        print("  (CUDA graphs are CUDA's: on the CPU the step runs eagerly)")
    return result


if __name__ == "__main__":
    main()
