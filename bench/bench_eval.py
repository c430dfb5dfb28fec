"""Time ``ibrar.evaluate`` against torchattacks run the usual way (every attack on every example).

    python bench/bench_eval.py --n 256 [--model vgg16 --width 0.25] [--checkpoint run/model.pt]

Without a checkpoint the model is untrained (BatchNorm statistics set on the data) and the labels
are its own clean predictions, so that every example is attacked by both sides (a fair timing;
accuracies then only show agreement).
Prints clean/robust accuracies side by side, the per-example agreement of each attack (the share of
examples both sides call robust, or both broken) and the time ratio. Both sides count an example as
robust only when it is classified correctly clean and after the attack. The worst case is over the
L-inf attacks at eps = 8/255 on both sides (CW-L2 is unbounded in L-inf and stays out of it).
torchattacks is a test-only dependency: ``pip install --no-deps torchattacks==3.5.1``.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from ibrar.attacks import CW, FAB, FGSM, NIFGSM, PGD
from ibrar.evaluate import evaluate, format_table
from timing import CLOCK_NOTE, clock, timed


class TinyCNN(nn.Module):
    """Fallback when ``ibrar.models`` is not available."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
        )
        self.classifier = nn.Linear(64 * 16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


def build_model(name: str, width: float, checkpoint: str | None) -> nn.Module:
    if name == "tiny":
        model: nn.Module = TinyCNN()
    else:
        try:
            from ibrar.models import create_model
        except ImportError:
            print("ibrar.models is not available: using the tiny CNN")
            model = TinyCNN()
        else:
            model = create_model(name, width=width)
    return model.eval()


def trained_model_and_data(checkpoint: str, data_root: str | None, n: int, seed: int):
    """A run folder / checkpoint (loaded safely) and n examples of its real test set (a seeded subset)."""
    from ibrar.data import load_split, resolve_data_root
    from ibrar.evaluate import select_subset
    from ibrar.loading import load_trained

    bundle, config, _ = load_trained(checkpoint)
    test = load_split(config.data.name, resolve_data_root(config.data.root or data_root), "test")
    index = select_subset(len(test.labels), n, seed)
    return bundle.model.eval(), test.images[index].float() / 255, test.labels[index]


def attacks_for(model: nn.Module, cw_steps: int) -> dict[str, object]:
    return {
        "fgsm": FGSM(model),
        "pgd10": PGD(model, steps=10, seed=0),
        f"cw{cw_steps}": CW(model, steps=cw_steps),
        "fab": FAB(model, seed=0),
        "nifgsm": NIFGSM(model),
    }


def reference_attacks(model: nn.Module, cw_steps: int) -> dict[str, object]:
    import torchattacks as ta

    return {
        "fgsm": ta.FGSM(model),
        "pgd10": ta.PGD(model, steps=10),
        f"cw{cw_steps}": ta.CW(model, c=0.1, lr=0.1, steps=cw_steps),
        "fab": ta.FAB(model, eps=8 / 255),
        "nifgsm": ta.NIFGSM(model),
    }


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]
                      for i in range(0, len(x), batch_size)])


def run_reference(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cw_steps: int,
                  batch_size: int) -> tuple[dict[str, torch.Tensor], float, float]:
    """torchattacks the usual way: each attack on all examples; an example counts as robust only when it
    is also classified correctly clean. Returns per-example robust masks, the L-inf worst case, seconds."""
    start = clock()
    correct = _accuracy(model, x, y, batch_size)
    worst = correct.clone()
    masks = {}
    for name, attack in reference_attacks(model, cw_steps).items():
        robust = torch.cat([_accuracy(model, attack(x[i:i + batch_size], y[i:i + batch_size]),
                                      y[i:i + batch_size], batch_size) for i in range(0, len(x), batch_size)])
        masks[name] = robust & correct
        if not name.startswith("cw"):  # CW-L2 is unbounded in L-inf: not part of the L-inf worst case
            worst &= masks[name]
    return masks, worst.float().mean().item(), clock() - start


def main(argv: list[str] | None = None) -> dict[str, float] | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256, help="number of examples")
    parser.add_argument("--model", default="vgg16", help="an ibrar.models name, or 'tiny'")
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--checkpoint", default=None, help="a run folder or checkpoint written by ibrar train")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--cw-steps", type=int, default=50, help="CW steps (the paper: 200)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    if args.checkpoint:
        model, x, y = trained_model_and_data(args.checkpoint, args.data_root, args.n, args.seed)
    else:
        model = build_model(args.model, args.width, None)
        x = torch.rand(args.n, 3, 32, 32, generator=torch.Generator().manual_seed(args.seed))
        model.train()  # give an untrained model sensible BatchNorm statistics
        with torch.no_grad():
            model(x[: args.batch_size])
        model.eval()
        with torch.no_grad():
            y = torch.cat([model(x[i:i + args.batch_size]).argmax(1) for i in range(0, args.n, args.batch_size)])

    reports = {}
    seconds = timed(lambda: reports.setdefault("all", evaluate(
        model, x, y, attacks_for(model, args.cw_steps), batch_size=args.batch_size, seed=args.seed)))
    cascade_seconds = timed(lambda: reports.setdefault("cascade", evaluate(
        model, x, y, attacks_for(model, args.cw_steps), batch_size=args.batch_size, seed=args.seed,
        worst_case_only=True)))
    report, cascade = reports["all"], reports["cascade"]
    print(format_table(report))
    try:
        ref_masks, ref_worst, ref_seconds = run_reference(model, x, y, args.cw_steps, args.batch_size)
    except ImportError:
        print("torchattacks is not installed: no reference timing")
        return None
    result: dict[str, float] = {}
    print(f"\n{'attack':<10} {'ibrar':>8} {'torchattacks':>13} {'per-example agreement':>22}")
    for r in report.attacks:
        ours, ref = report.robust[r.name], ref_masks[r.name]
        agreement = (ours == ref).float().mean().item()
        result[f"agreement/{r.name}"] = agreement
        print(f"{r.name:<10} {r.accuracy:>8.2%} {ref.float().mean().item():>13.2%} {agreement:>22.2%}")
    print(f"{'worst (Linf 8/255)':<10} {report.worst_case:>8.2%} {ref_worst:>13.2%}")
    print(f"{'worst (cascade)':<10} {cascade.worst_case:>8.2%}")
    print(f"\n{CLOCK_NOTE}: ibrar per-attack {seconds:.1f}s, ibrar worst-case cascade {cascade_seconds:.1f}s, "
          f"torchattacks {ref_seconds:.1f}s")
    print(f"torchattacks / ibrar per-attack: {ref_seconds / max(seconds, 1e-9):.2f}x; "
          f"torchattacks / ibrar cascade: {ref_seconds / max(cascade_seconds, 1e-9):.2f}x")
    return result


if __name__ == "__main__":
    main()
