"""Run every benchmark, write one JSON artifact per section to results/bench/, and regenerate bench/RESULTS.md
from them (`ibrar report`): one command, every figure a ratio measured in one run.

    python bench/run_all.py [--quick] [--data-root DIR] [--checkpoint RUN_DIR] [--root CHECKOUT] [--only MODULES]

--quick shrinks every benchmark (narrow model, few repeats) for a smoke check of the suite itself; it writes
its artifacts like a full run, so give it --root on a scratch copy of the checkout.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_core  # noqa: E402
import bench_fast_path  # noqa: E402
import bench_scaling  # noqa: E402
import bench_train  # noqa: E402


def machine() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, {gpu}"


def capture(fn, argv: list[str]) -> tuple[object, str, float]:
    out = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(out):
        result = fn(argv)
    return result, out.getvalue(), time.perf_counter() - start


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--checkpoint", default=None, help="a trained run folder for the evaluation benchmark")
    parser.add_argument("--root", default=str(HERE.parent),
                        help="the checkout whose results/bench/ and bench/RESULTS.md are written (default: this one)")
    parser.add_argument("--only", default=None,
                        help="comma-separated benchmark modules to run (e.g. bench_eval); the others keep their "
                             "committed artifacts")
    args = parser.parse_args(argv)
    quick = args.quick
    runs = [
        ("IB-RAR penalty and mask scoring vs a CE step (VGG16, batch 100)", bench_core.main,
         ["--width", "0.25" if quick else "1.0", "--repeats", "2" if quick else "5"]),
        ("How the penalty's cost grows with the batch and the number of IB layers", bench_scaling.main,
         ["--repeats", "2" if quick else "5"] + (["--batches", "50,100"] if quick else [])),
        ("Training throughput per method and the data pipeline's share (VGG16 width 0.25)", bench_train.main,
         ["--steps", "2" if quick else "6"] + (["--data-root", args.data_root] if args.data_root else [])),
        ("The real training step per fast-path setting, and its host-device synchronisation check",
         bench_fast_path.main, ["--batches", "2" if quick else "10", "--rounds", "2" if quick else "5"]
         + (["--width", "0.25"] if quick else []) + (["--data-root", args.data_root] if args.data_root else [])),
    ]
    if args.checkpoint:
        import bench_eval
        import check_autoattack

        data_root = ["--data-root", args.data_root] if args.data_root else []
        runs.append(("Evaluation against torchattacks (same examples)", bench_eval.main,
                     ["--checkpoint", args.checkpoint, "--n", "64" if quick else "1000"] + data_root))
        runs.append(("AutoAttack: `ibrar eval` against the reference run by hand (full budget)", check_autoattack.main,
                     ["--checkpoint", args.checkpoint, "--n", "16" if quick else "200"] + data_root))
    names = [fn.__module__ for _, fn, _ in runs]
    wanted = set(args.only.split(",")) if args.only else set(names)
    if wanted - set(names):
        parser.error(f"--only: no benchmark named {', '.join(sorted(wanted - set(names)))} "
                     f"(there are {', '.join(names)}; bench_eval and check_autoattack need --checkpoint)")
    # each section keeps its place in bench/RESULTS.md whichever benchmarks run now
    runs = [(order, *run) for order, run in enumerate(runs) if run[1].__module__ in wanted]
    from ibrar.report import RESULTS_DIR, write_docs
    from ibrar.reproducibility import git_commit

    root = Path(args.root)
    folder = root / RESULTS_DIR / "bench"
    folder.mkdir(parents=True, exist_ok=True)
    for order, title, fn, bench_argv in runs:
        print(f"running: {title}", file=sys.stderr)
        date = f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"
        _, text, seconds = capture(fn, bench_argv)
        artifact = {"title": title, "module": fn.__module__, "order": order,
                    "command": f"python bench/{fn.__module__}.py {' '.join(bench_argv)}",
                    "seconds": round(seconds, 1), "date": date, "machine": machine(), "torch": torch.__version__,
                    "python": platform.python_version(), "git_commit": git_commit(HERE), "output": text}
        path = folder / f"{fn.__module__}.json"
        path.write_text(json.dumps(artifact, indent=2) + "\n")
        print(f"wrote {path}", file=sys.stderr)
    write_docs(root, only=["bench"])
    out = root / "bench" / "RESULTS.md"
    print(f"wrote {out}", file=sys.stderr)
    return out


if __name__ == "__main__":
    main()
