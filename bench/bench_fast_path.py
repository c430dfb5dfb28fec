"""The real training step (Trainer.train_epoch) of Table 1's PGD-AT pair, per fast-path setting, and its sync check.

Run: `python bench/bench_fast_path.py [--device auto] [--width W] [--batches 10] [--rounds 5] [--data-root DIR]`.
The issue's GPU goals: IB-RAR adds under 3% to a PGD-AT step of VGG16 at batch 100, and the step has no
host-device synchronisation (torch.cuda.set_sync_debug_mode("error") around the whole epoch loop). On CUDA the
settings are fp32, bf16 + channels_last, and bf16 + channels_last + torch.compile; on the CPU the fast path is
off, so only fp32 runs (and the sync check uses the Python-level stand-in). Configs are the paper's
(configs/paper/table1-pgd_at*.yaml) with the width, batch and number of batches set here; rounds interleave
every variant so machine noise hits them alike.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ibrar.build import resolve_device
from ibrar.config import load_config
from ibrar.data import DataNotFoundError, load_split, resolve_data_root
from ibrar.host_sync import HostSyncError
from ibrar.train import Trainer
from timing import CLOCK_NOTE, timed

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "paper"
METHODS = {"PGD-AT": "table1-pgd_at.yaml", "PGD-AT + IB-RAR": "table1-pgd_at-ibrar.yaml"}
SETTINGS = {
    "fp32": [],
    "bf16 + channels_last": ["train.amp=true", "train.channels_last=true"],
    "bf16 + channels_last + compile": ["train.amp=true", "train.channels_last=true", "train.compile=true"],
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


def build_trainer(method_file: str, overrides: list[str], run_dir: Path) -> Trainer:
    run_dir.mkdir(parents=True, exist_ok=True)
    return Trainer(load_config(CONFIGS / method_file, overrides), run_dir, quiet=True)


def sync_check(trainer: Trainer, epoch: int) -> str:
    """One more epoch of a warmed-up (compiled) trainer with train.forbid_host_sync on: 'none' or the first
    synchronisation it met. Warmed up, so that compilation is not counted as part of the step."""
    train = trainer.config.train.model_copy(update={"forbid_host_sync": True})
    trainer.config = trainer.config.model_copy(update={"train": train})
    try:
        trainer.train_epoch(epoch)
    except HostSyncError as error:
        return f"FOUND: {error}"
    return "none"


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--width", type=float, default=None, help="default 1.0 on CUDA, 0.25 on the CPU")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--batches", type=int, default=10, help="training batches per timed epoch")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory(prefix="ibrar-bench-") as scratch:
        return run(args, device, Path(scratch))


def run(args: argparse.Namespace, device: torch.device, scratch: Path) -> dict[str, float]:
    cuda = device.type == "cuda"
    width = args.width if args.width is not None else (1.0 if cuda else 0.25)
    settings = SETTINGS if cuda else {"fp32": SETTINGS["fp32"]}
    n = args.batch * args.batches
    common = data_overrides(args.data_root, n, scratch) + [
        f"device={device.type}", f"model.width={width}", f"data.batch_size={args.batch}",
        f"data.train_subset={n}", "train.eval_subset=0", "train.info_plane_every=0", "train.epochs=1000",
        "train.cuda_graph=false"]  # the eager step; bench_graph_step.py times it as CUDA graphs

    trainers = {(s, m): build_trainer(f, common + extra, scratch / f"{s}-{m}".replace(" ", ""))
                for s, extra in settings.items() for m, f in METHODS.items()}
    for trainer in trainers.values():  # warm-up (and compilation)
        trainer.train_epoch(0)
    seconds: dict[tuple[str, str], list[float]] = {key: [] for key in trainers}
    for r in range(args.rounds):
        for key, trainer in trainers.items():
            seconds[key].append(timed(lambda t=trainer, e=r + 1: t.train_epoch(e), device) / args.batches)
    med = {key: statistics.median(v) for key, v in seconds.items()}

    fastest = list(settings)[-1]
    sync = sync_check(trainers[(fastest, "PGD-AT + IB-RAR")], args.rounds + 1)
    name = torch.cuda.get_device_name(device) if cuda else "CPU"
    print(f"VGG16 width {width}, batch {args.batch}, {name}; the Trainer's epoch loop over {args.batches} batches "
          f"(loader, mask, inner PGD-10, loss, IB terms, backward, SGD), median of {args.rounds} interleaved "
          f"rounds; {CLOCK_NOTE}")
    result: dict[str, float] = {}
    base = med[("fp32", "PGD-AT")]
    for setting in settings:
        plain, ibrar = med[(setting, "PGD-AT")], med[(setting, "PGD-AT + IB-RAR")]
        overhead = ibrar / plain - 1
        result[f"ib_overhead/{setting}"] = overhead
        result[f"speedup/{setting}"] = base / plain
        result[f"step_ms/{setting}/PGD-AT"] = plain * 1000
        result[f"step_ms/{setting}/PGD-AT + IB-RAR"] = ibrar * 1000
        print(f"  {setting:32s} PGD-AT {plain * 1000:8.1f} ms/step ({base / plain:4.2f}x fp32)   "
              f"+ IB-RAR {ibrar * 1000:8.1f} ms/step   IB-RAR adds {overhead:+.2%}")
    if not cuda:
        print("  (train.amp, train.channels_last and train.compile are the CUDA fast path: off on the CPU)")
    checks = 'torch.cuda.set_sync_debug_mode("error") + Python-level guard' if cuda else "Python-level guard"
    print(f"  host-device synchronisation inside the step ({fastest}, PGD-AT + IB-RAR, one epoch, {checks}): "
          f"{sync}")
    result["sync_free"] = float(sync == "none")
    return result


if __name__ == "__main__":
    main()
