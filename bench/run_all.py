"""Run every benchmark and write bench/RESULTS.md: one command, every figure a ratio measured in one run.

    python bench/run_all.py [--quick] [--data-root DIR] [--checkpoint RUN_DIR]

--quick shrinks every benchmark (narrow model, few repeats) for a smoke check of the suite itself.
"""

from __future__ import annotations

import argparse
import contextlib
import io
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
    return (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, {gpu}; "
            f"torch {torch.__version__}, Python {platform.python_version()}")


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
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"))
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

        runs.append(("Evaluation against torchattacks (same examples)", bench_eval.main,
                     ["--checkpoint", args.checkpoint, "--n", "64" if quick else "1000"]
                     + (["--data-root", args.data_root] if args.data_root else [])))
    sections = [
        "# Benchmark results",
        "",
        f"Written by `python bench/run_all.py{' --quick' if quick else ''}` on "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. Machine: {machine()}.",
        "Every figure is a ratio of timings taken side by side in the same run (shared machines are noisy).",
    ]
    for title, fn, bench_argv in runs:
        print(f"running: {title}", file=sys.stderr)
        _, text, seconds = capture(fn, bench_argv)
        sections += ["", f"## {title}", "", f"`{fn.__module__}.py {' '.join(bench_argv)}` ({seconds:.0f} s)", "",
                     "```", text.rstrip(), "```"]
    out = Path(args.out)
    out.write_text("\n".join(sections) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    return out


if __name__ == "__main__":
    main()
