"""Cost of the IB-RAR penalty and of the channel-mask scoring, relative to the CE training step they join.

Run: `python bench/bench_core.py [--width 1.0] [--batch 100] [--repeats 5] [--device cpu]`.
Every figure is a ratio of timings taken in the same run, interleaved, so machine noise hits both sides.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from torch.nn import functional as F

from ibrar import ChannelMask, IBRegularizer, tap_layers
from ibrar.models import create_model
from timing import CLOCK_NOTE, timed


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = create_model("vgg16", width=args.width).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.rand(args.batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    robust = IBRegularizer(list(model.robust_layers), num_classes=10)
    every = IBRegularizer(list(model.ib_layers), num_classes=10)
    mask = ChannelMask(model.last_conv_channels, num_classes=10)

    def step(reg: IBRegularizer | None) -> None:
        with tap_layers(model, model.ib_layers) as feats:
            loss = F.cross_entropy(model(x), y)
            if reg is not None:
                loss = loss + reg(x, y, feats).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    with torch.no_grad(), tap_layers(model, model.ib_layers) as feats:
        model(x)
    detached = {k: v.detach() for k, v in feats.items()}

    def penalty_only(reg: IBRegularizer) -> None:
        leaves = {k: v.clone().requires_grad_(True) for k, v in detached.items()}
        reg(x, y, leaves).loss.backward()

    def score_mask() -> None:
        mask.channel_scores(detached[model.last_conv], y)

    for _ in range(2):  # warm-up
        step(robust)
        step(None)
    times: dict[str, list[float]] = {k: [] for k in ("ce", "ce+rob", "ce+all", "pen_rob", "pen_all", "mask")}
    for _ in range(args.repeats):
        times["ce"].append(timed(lambda: step(None), device))
        times["ce+rob"].append(timed(lambda: step(robust), device))
        times["ce+all"].append(timed(lambda: step(every), device))
        times["pen_rob"].append(timed(lambda: penalty_only(robust), device))
        times["pen_all"].append(timed(lambda: penalty_only(every), device))
        times["mask"].append(timed(score_mask, device))
    med = {k: statistics.median(v) for k, v in times.items()}
    ce = med["ce"]
    result = {
        "ce_step_s": ce,
        "penalty_robust_isolated_ratio": med["pen_rob"] / ce,
        "penalty_all_isolated_ratio": med["pen_all"] / ce,
        "step_robust_ratio": med["ce+rob"] / ce - 1,
        "step_all_ratio": med["ce+all"] / ce - 1,
        "mask_scoring_ratio": med["mask"] / ce,
    }
    print(f"VGG16 width {args.width}, batch {args.batch}, {device}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats}; {CLOCK_NOTE}")
    print(f"  CE training step:                            {ce * 1000:9.1f} ms")
    print(f"  IB penalty, robust layers (isolated fwd+bwd): {result['penalty_robust_isolated_ratio']:9.2%} of a step")
    print(f"  IB penalty, all 7 layers (isolated fwd+bwd):  {result['penalty_all_isolated_ratio']:9.2%} of a step")
    print(f"  whole step with penalty, robust layers:      {result['step_robust_ratio']:+9.2%}")
    print(f"  whole step with penalty, all layers:         {result['step_all_ratio']:+9.2%}")
    print(f"  mask scoring of {model.last_conv_channels} channels:               "
          f"{result['mask_scoring_ratio']:9.2%} of a step")
    return result


if __name__ == "__main__":
    main()
