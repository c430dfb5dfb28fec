"""Is the number ibrar calls AutoAttack the reference's, at full budget, on a real trained network?

    python bench/check_autoattack.py --checkpoint RUN_DIR [--n 500] [--data-root DIR]

Runs `ibrar eval RUN_DIR --attacks autoattack --n N` (the command's own code path, into a scratch folder), then
the reference run by hand on the same examples:
`pyautoattack.AutoAttack(model, norm="Linf", eps, version="standard", seed=0).run_standard_evaluation`,
and prints the robust accuracy after each stage side by side and whether they are equal.
"""

from __future__ import annotations

import argparse
import logging
import re
import tempfile

import torch

from timing import CLOCK_NOTE, timed

STAGES = ("clean", "apgd-ce", "apgd-t", "fab-t", "square")


def reference_stages(model, x, y, eps, n_target_classes, n_iter=100, n_queries=5000, batch_size=250):
    """The reference run by hand: the accuracy after each stage as its own logger prints it (in percent, two
    decimals), and its adversarial examples."""
    import pyautoattack

    aa = pyautoattack.AutoAttack(model, norm="Linf", eps=eps, version="standard", seed=0)
    aa.apgd_targeted.n_target_classes = aa.fab.n_target_classes = n_target_classes
    if n_iter != 100:
        aa.apgd.n_iter = aa.apgd_targeted.n_iter = aa.fab.n_iter = n_iter
    aa.square.n_queries = n_queries
    lines = []

    class Lines(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    logger = logging.getLogger("auto-attack")
    handler, level = Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        with torch.random.fork_rng():
            x_adv, _ = aa.run_standard_evaluation(x, y, batch_size=batch_size)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    text = "\n".join(lines)
    stages = {"clean": re.search(r"initial accuracy: ([\d.]+)%", text).group(1)}
    for stage in STAGES[1:]:
        found = re.search(rf"robust accuracy after {stage.upper()}: ([\d.]+)%", text)
        stages[stage] = found.group(1) if found else "0.00"  # the reference skips stages once nothing is left
    return stages, x_adv


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="a run folder written by ibrar train")
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args(argv)

    from bench_eval import trained_model_and_data
    from ibrar.run_eval import evaluate_run
    from ibrar.run_folder import RunFolder

    with tempfile.TemporaryDirectory() as scratch:  # `ibrar eval`'s own path, from loading the run onwards
        ours_seconds = timed(lambda: evaluate_run(args.checkpoint, data_root=args.data_root, attacks=["autoattack"],
                                                  n=args.n, seed=0, quiet=True, out_dir=scratch))
        block = RunFolder(scratch).require_evaluation().autoattack
    model, x, y = trained_model_and_data(args.checkpoint, args.data_root, args.n, 0)  # the same seeded examples
    found = {}
    ref_seconds = timed(lambda: found.update(stages=reference_stages(
        model, x, y.long(), block["eps"], block["n_target_classes"], batch_size=block["batch_size"])[0]))
    ours = {stage: f"{100 * block['stages'][stage]:.2f}" for stage in STAGES}
    equal = ours == found["stages"]
    print(f"{args.n} test examples (seed 0), eps {block['eps']:.5f}, pyautoattack {block['package_version']}, "
          f"standard version, {block['n_target_classes']} target classes")
    print(f"{'stage':<10} {'ibrar eval':>11} {'reference':>10}")
    for stage in STAGES:
        print(f"{stage:<10} {ours[stage]:>11} {found['stages'][stage]:>10}")
    print(f"per-stage accuracies equal: {'yes' if equal else 'NO'}")
    print(f"\n{CLOCK_NOTE}: ibrar eval {ours_seconds:.1f}s, reference by hand {ref_seconds:.1f}s")
    return {"equal": equal, "ours": ours, "reference": found["stages"]}


if __name__ == "__main__":
    main()
