"""One epoch of training batches: the plain loader (gather on the host, copy, augment on the device) against
the resident one (the uint8 set on the device, one gather per batch), and that both give the same batches.

Run: `python bench/bench_loader.py [--device cuda] [--n 50000] [--batch 100] [--epochs 3]`.
Random uint8 images of CIFAR-10's shape; each epoch's batches are consumed as a step would (summed on the
device), so a loader that waits for the device pays for it here.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from ibrar.data import BatchLoader, ImageData, ResidentLoader
from timing import CLOCK_NOTE, timed


def epoch(loader: BatchLoader, number: int) -> torch.Tensor:
    loader.set_epoch(number)
    total = torch.zeros((), device=loader.device)
    for x, y in loader:
        total += x[:, 0, 0, 0].sum() + y.sum()
    return total


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per loader")
    args = parser.parse_args(argv)
    g = torch.Generator().manual_seed(0)
    data = ImageData(torch.randint(0, 256, (args.n, 3, 32, 32), dtype=torch.uint8, generator=g),
                     torch.randint(10, (args.n,), generator=g), [str(c) for c in range(10)])
    options = {"batch_size": args.batch, "shuffle": True, "augment": True, "seed": 0, "device": args.device}
    loaders = {"plain": BatchLoader(data, **options), "resident": ResidentLoader(data, **options)}
    same = all(torch.equal(xa, xb) and torch.equal(ya, yb)
               for (xa, ya), (xb, yb) in zip(loaders["plain"], loaders["resident"], strict=True))
    seconds: dict[str, list[float]] = {name: [] for name in loaders}
    for number in range(args.epochs):  # interleaved, so that machine noise hits both alike
        for name, loader in loaders.items():
            seconds[name].append(timed(lambda loader=loader, n=number: epoch(loader, n), args.device))
    med = {name: statistics.median(s) for name, s in seconds.items()}
    batches = len(loaders["plain"])
    print(f"{args.n} images, batch {args.batch}, on {args.device}; median of {args.epochs} epochs; {CLOCK_NOTE}")
    for name, s in med.items():
        print(f"  {name:9s} {s:7.3f} s/epoch  ({s / batches * 1e3:.3f} ms/batch)")
    print(f"  resident: {med['plain'] / med['resident']:.1f}x the plain loader's speed; "
          f"the same batches: {'yes' if same else 'NO'}")
    return {"plain_s": med["plain"], "resident_s": med["resident"], "same_batches": float(same)}


if __name__ == "__main__":
    main()
