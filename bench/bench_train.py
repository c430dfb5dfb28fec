"""Training throughput per method, with and without IB-RAR, and the data pipeline's share of a step.

Run: `python bench/bench_train.py [--width 0.25] [--batch 100] [--steps 6] [--data-root DIR]`.
Uses real CIFAR-10 when it is found under the data root, else random uint8 images of the same shape.
All figures come from one run, methods interleaved round by round, so machine noise hits every method alike.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from ibrar.build import build_model, build_regularizer, build_training_method
from ibrar.config import build_config
from ibrar.data import BatchLoader, DataNotFoundError, ImageData, load_split, resolve_data_root
from ibrar.data.loader import derived_seed
from ibrar.step import TrainStep
from ibrar.taps import tap_layers
from timing import CLOCK_NOTE, timed

VARIANTS = {
    "CE": {"method": {"name": "ce"}},
    "CE + IB-RAR": {"method": {"name": "ce"}, "ib": {"enabled": True}, "mask": {"enabled": True}},
    "PGD-AT": {"method": {"name": "pgd_at"}},
    "PGD-AT + IB-RAR": {"method": {"name": "pgd_at"}, "ib": {"enabled": True}, "mask": {"enabled": True}},
}


def load_images(data_root: str | None, n: int) -> ImageData:
    try:
        data = load_split("cifar10", resolve_data_root(data_root), "train")
        return ImageData(data.images[:n], data.labels[:n], data.classes)
    except DataNotFoundError:
        g = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
        return ImageData(images, torch.arange(n) % 10, [str(i) for i in range(10)])


class Variant:
    """One method's training step: the trainer's own `TrainStep`, built through the same functions."""

    def __init__(self, name: str, overrides: dict, width: float) -> None:
        self.name = name
        config = build_config({"model": {"name": "vgg16", "width": width}, **overrides})
        bundle = build_model(config, 10, 32)
        self.model, self.mask = bundle.model.train(), bundle.mask
        self.method = build_training_method(config)
        self.regularizer = build_regularizer(config, bundle, 10) if config.ib.enabled else None
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        self.generator = torch.Generator().manual_seed(derived_seed(0, 1))

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        layers = self.regularizer.layers if self.regularizer else ()
        with tap_layers(self.model, layers) as taps:
            TrainStep(self.model, self.model, self.method, self.optimizer, taps, self.regularizer,
                      self.mask)(x, y, generator=self.generator)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per method")
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    data = load_images(args.data_root, args.batch * (args.steps + 2))
    loader = BatchLoader(data, args.batch, shuffle=True, augment=True, seed=0)
    batches = list(loader)
    variants = [Variant(name, overrides, args.width) for name, overrides in VARIANTS.items()]
    for v in variants:  # warm-up
        v.step(*batches[0])
    seconds: dict[str, list[float]] = {v.name: [] for v in variants}
    data_seconds: list[float] = []
    for i in range(args.steps):
        x, y = batches[1 + i % (len(batches) - 1)]
        # one batch of the pipeline: index, convert to float, crop + flip
        data_seconds.append(timed(lambda: next(iter(loader))))
        for v in variants:
            seconds[v.name].append(timed(lambda v=v, x=x, y=y: v.step(x, y)))
    med = {k: statistics.median(v) for k, v in seconds.items()}
    data_s = statistics.median(data_seconds)
    result = {f"images_per_s/{k}": args.batch / v for k, v in med.items()}
    result["ib_overhead/CE"] = med["CE + IB-RAR"] / med["CE"] - 1
    result["ib_overhead/PGD-AT"] = med["PGD-AT + IB-RAR"] / med["PGD-AT"] - 1
    result["data_share_of_CE_step"] = data_s / med["CE"]
    print(f"VGG16 width {args.width}, batch {args.batch}, {torch.get_num_threads()} threads, "
          f"median of {args.steps} steps, methods interleaved; {CLOCK_NOTE}")
    for name in VARIANTS:
        print(f"  {name:18s} {args.batch / med[name]:8.1f} images/s  ({med[name] * 1000:.0f} ms/step)")
    print(f"  IB-RAR (IB loss + mask) adds {result['ib_overhead/CE']:+.1%} to a CE step, "
          f"{result['ib_overhead/PGD-AT']:+.1%} to a PGD-AT step")
    print(f"  data loading + augmentation: {data_s * 1000:.1f} ms/batch = {result['data_share_of_CE_step']:.1%} "
          "of a CE step")
    return result


if __name__ == "__main__":
    main()
