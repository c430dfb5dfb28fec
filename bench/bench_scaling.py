"""How the IB-RAR penalty's cost scales: with the batch size m (the m x m kernels and solves) and with the
number of IB layers, each relative to the CE step of the same batch, measured in one run.

Run: `python bench/bench_scaling.py [--batches 50,100,200,400] [--width 0.25] [--repeats 5]`.
"""

from __future__ import annotations

import argparse

import torch
from torch.nn import functional as F

from ibrar import ChannelMask, IBRegularizer, tap_layers
from ibrar.models import create_model
from timing import CLOCK_NOTE, median_seconds


def measure_batch(model: torch.nn.Module, layers: list[str], m: int, repeats: int) -> tuple[float, ...]:
    """CE step seconds, and the penalty (robust / all layers) and mask scoring as fractions of it, at batch m."""
    x = torch.rand(m, 3, 32, 32)
    y = torch.randint(0, 10, (m,))

    def ce_step() -> None:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    with torch.no_grad(), tap_layers(model, layers) as feats:
        model(x)
    detached = {k: v.detach() for k, v in feats.items()}

    def penalty(names: list[str]) -> None:
        leaves = {k: detached[k].clone().requires_grad_(True) for k in names}
        IBRegularizer(names, num_classes=10)(x, y, leaves).loss.backward()

    mask = ChannelMask(model.last_conv_channels, num_classes=10)
    ce = median_seconds(ce_step, repeats)
    rob = median_seconds(lambda: penalty(list(model.robust_layers)), repeats) / ce
    every = median_seconds(lambda: penalty(layers), repeats) / ce
    scoring = median_seconds(lambda: mask.channel_scores(detached[model.last_conv], y), repeats) / ce
    return ce, rob, every, scoring


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="50,100,200,400")
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model = create_model("vgg16", width=args.width).train()
    layers = list(model.ib_layers)
    result: dict[str, float] = {}
    print(f"VGG16 width {args.width}, {torch.get_num_threads()} threads; penalty = forward + backward of the "
          f"penalty alone; ratios to one CE step (forward + backward) at the same batch size; {CLOCK_NOTE}")
    print(f"{'batch':>6} {'CE step ms':>11} {'3 robust layers':>16} {'all 7 layers':>13} {'mask scoring':>13}")
    for m in (int(b) for b in args.batches.split(",")):
        ce, rob, every, scoring = measure_batch(model, layers, m, args.repeats)
        print(f"{m:>6} {ce * 1000:>11.1f} {rob:>16.2%} {every:>13.2%} {scoring:>13.2%}")
        result.update({f"robust/{m}": rob, f"all/{m}": every, f"mask/{m}": scoring})
    print("\nby number of layers (batch 100, layers taken in order block1..fc2):")
    x = torch.rand(100, 3, 32, 32)
    y = torch.randint(0, 10, (100,))
    with torch.no_grad(), tap_layers(model, layers) as feats:
        model(x)
    detached = {k: v.detach() for k, v in feats.items()}
    base = None
    for k in range(1, len(layers) + 1):
        names = layers[:k]

        def penalty_k(names: list[str] = names) -> None:
            leaves = {n: detached[n].clone().requires_grad_(True) for n in names}
            IBRegularizer(names, num_classes=10)(x, y, leaves).loss.backward()

        seconds = median_seconds(penalty_k, args.repeats)
        base = base or seconds
        print(f"  {k} layer(s) (+{names[-1]}): {seconds * 1000:7.1f} ms ({seconds / base:.1f}x one layer)")
        result[f"layers/{k}"] = seconds
    return result


if __name__ == "__main__":
    main()
