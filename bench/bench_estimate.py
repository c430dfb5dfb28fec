"""The time `ibrar eval` prints before it starts, beside the time the evaluation then took.

    python bench/bench_estimate.py --data-root DIR [--n 200] [RUN_DIR ...]

Without RUN_DIRs it first trains the two models the estimate must hold for, briefly, into a temporary folder:
the quickstart's network (VGG16 width 0.25, IB-RAR, CE; 1 epoch on 5,000 images), which AutoAttack's first
stage breaks entirely, and a PGD-AT network (`cpu/table1-pgd_at.yaml`, 1 epoch on 2,000 images), part of which
survives into AutoAttack's later stages. Each is then evaluated as `ibrar eval` does (FGSM, PGD-10, the
reference AutoAttack, the large-eps masking check) on a seeded subset of N test images. The table shows the
estimate printed at the start, the estimate of the old rule (AutoAttack counted as if every stage ran on every
clean-correct example) and the measured wall time; the goal is a ratio within a factor of two. A second table
takes each piece (each attack, each AutoAttack stage) at the size it ran, to show which one is off.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from ibrar.attacks import build_attack
from ibrar.data import load_split, resolve_data_root
from ibrar.eval_estimate import gradient_count
from ibrar.loading import load_trained
from ibrar.run_eval import run_evaluation

MODELS = {  # name -> (config, overrides): seconds-to-minutes CPU twins of the two cases
    "quickstart (CE + IB-RAR)": ("quickstart.yaml", ["train.epochs=1", "data.train_subset=5000"]),
    "PGD-AT": ("cpu/table1-pgd_at.yaml", ["train.epochs=3", "data.train_subset=5000"]),
}
ATTACKS = ["fgsm", "pgd10", "autoattack"]


def train_models(folder: Path, data_root: str | None) -> list[tuple[str, Path]]:
    from ibrar.config import load_config
    from ibrar.train import train

    runs = []
    for name, (config_name, overrides) in MODELS.items():
        run_dir = folder / config_name.replace("/", "-").removesuffix(".yaml")
        config = load_config(config_name, [*overrides, "train.eval_pgd_steps=0", "train.info_plane_every=0"])
        print(f"training {name}: {config_name} {' '.join(overrides)}", flush=True)
        train(config, run_dir, data_root=data_root, overwrite=True, quiet=True)
        runs.append((name, run_dir))
    return runs


def old_estimate(run_dir: Path, result: dict, per_grad: float) -> float:
    """The rule before the plan: every attack's full budget on every clean-correct example."""
    bundle, _, _ = load_trained(run_dir)
    grads = sum(gradient_count(build_attack(a, bundle.model), 10) for a in ATTACKS)
    return per_grad * result["n"] * (1 / 3 + result["clean"] * grads)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", help="run folders to evaluate (default: train the two models)")
    parser.add_argument("--data-root", help="the CIFAR-10 folder")
    parser.add_argument("--n", type=int, default=200, help="test images per evaluation (default 200)")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="ibrar-bench-estimate-") as tmp:
        runs = [(Path(r).name, Path(r)) for r in args.runs] or train_models(Path(tmp), args.data_root)
        for name, run_dir in runs:
            _, config, _ = load_trained(run_dir)
            test = load_split(config.data.name, resolve_data_root(config.data.root or args.data_root), "test")
            out = Path(tmp) / f"eval-{run_dir.name}"
            result, _ = run_evaluation(run_dir, attacks=ATTACKS, n=args.n, quiet=True, device="cpu",
                                       test_data=test, out_dir=out)
            per_grad = result["estimate"]["seconds_per_grad"]
            rows.append({"model": name, "n": result["n"], "clean": result["clean"],
                         "autoattack": result["autoattack"]["robust_accuracy"],
                         "estimate": result["estimate"]["seconds"], "old": old_estimate(run_dir, result, per_grad),
                         "measured": result["total_seconds"], "pieces": result["estimate"]["pieces"]})
    print(f"\n{'model':26}{'n':>6}{'clean':>8}{'AA':>8}{'estimate':>11}{'old rule':>11}{'measured':>11}"
          f"{'estimate/measured':>19}")
    for r in rows:
        print(f"{r['model']:26}{r['n']:>6}{r['clean']:>8.1%}{r['autoattack']:>8.1%}{r['estimate']:>10.0f}s"
              f"{r['old']:>10.0f}s{r['measured']:>10.0f}s{r['estimate'] / r['measured']:>19.2f}")
    print(f"\npiece by piece (each at the size it really ran; eval.json's estimate.pieces)\n"
          f"{'model':26}{'piece':30}{'examples':>9}{'estimate':>11}{'measured':>11}{'estimate/measured':>19}")
    for r in rows:
        for p in r["pieces"]:
            ratio = p["estimated_s"] / p["seconds"] if p["seconds"] > 0 else float("nan")
            print(f"{r['model']:26}{p['piece']:30}{p['examples']:>9}{p['estimated_s']:>10.1f}s{p['seconds']:>10.1f}s"
                  f"{ratio:>19.2f}")
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
