"""The kit's `check` stage: the CUDA tests (CUDA_TESTS, -m cuda) and bench/bench_fast_path.py on
full-width VGG16 at batch 100 -> $OUT/check.json, check.md, cuda-tests.xml (see bench/gpu/README.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from stages import REPO, Context


def junit_summary(path: Path) -> dict[str, Any]:
    """Counts and the failing tests' names and first message lines from a pytest JUnit XML file."""
    if not path.is_file():
        return {"error": f"no {path.name}: pytest did not finish"}
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    failed = []
    for case in suite.iter("testcase"):
        for kind in ("failure", "error"):
            node = case.find(kind)
            if node is not None:
                message = (node.get("message") or "").strip().splitlines()
                failed.append(f"{case.get('name')}: {message[0][:300] if message else kind}")
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return {**counts, "seconds": float(suite.get("time", 0)), "failed": failed}


# Every test file with CUDA tests: the device checks, and the CUDA-graph step's replay against its eager step.
CUDA_TESTS = ("tests/test_cuda.py", "tests/test_graph_step.py")


def run_cuda_tests(ctx: Context, timeout: float) -> dict[str, Any]:
    xml = ctx.out / "cuda-tests.xml"
    command = [sys.executable, "-m", "pytest", *CUDA_TESTS, "-m", "cuda", "-q", "-rfEs",
               "-p", "no:cacheprovider", f"--junitxml={xml}"]
    print(f"== CUDA tests: {' '.join(command[1:])}", flush=True)
    try:
        rc = subprocess.run(command, cwd=REPO, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        rc = "timeout"
    summary = junit_summary(xml)
    summary["exit_code"] = rc
    return summary


def fast_path_args(ctx: Context) -> list[str]:
    if ctx.rehearsal:  # tiny: seconds on one CPU thread; random images (the bench writes them)
        return ["--device", "cpu", "--width", "0.0625", "--batch", "8", "--batches", "2", "--rounds", "1",
                "--data-root", str(ctx.data_root / "absent")]
    # the rounds stop in time for the call to write its files: a minute before the call ends (warm-up, capture
    # and the sync check come on top of the rounds, so the budget keeps that minute)
    budget = max(30.0, ctx.remaining() - 60)
    return ["--device", "cuda", "--width", "1.0", "--batch", "100", "--batches", "10", "--rounds", "5",
            "--budget-s", f"{budget:.0f}", "--data-root", str(ctx.data_root)]


def check_markdown(info: dict[str, Any], tests: dict[str, Any], bench: dict[str, Any], args: list[str]) -> str:
    import bench_fast_path

    lines = [f"# GPU check on {info['device']} (torch {info['torch']}, CUDA {info['cuda']})", "",
             f"CUDA tests ({', '.join(CUDA_TESTS)}, -m cuda): {tests.get('passed', 0)} passed, "
             f"{tests.get('failures', 0)} failed, {tests.get('errors', 0)} errors, {tests.get('skipped', 0)} "
             f"skipped ({tests.get('seconds', 0):.0f} s)."]
    lines += [f"- FAILED {name}" for name in tests.get("failed", [])]
    if tests.get("error"):
        lines.append(f"- {tests['error']}")
    if not bench:
        why = "not run in this call (IBRAR_GPU_CHECK_BENCH=0)" if not args else "started, not finished in this call"
        return "\n".join([*lines, "", f"Fast-path benchmark: {why}.", ""])
    settings = [k.split("/", 1)[1] for k in bench if k.startswith("ib_overhead/")] + list(bench.get("unavailable", []))
    lines += ["", f"`python bench/bench_fast_path.py {' '.join(args)}`: the Trainer's step of VGG16, "
              "median of interleaved rounds.", "", bench_fast_path.markdown(bench, settings), "",
              "| setting | IB-RAR adds to a PGD-AT step | goal < 3% | PGD-AT speed-up vs fp32 |",
              "| --- | ---: | --- | ---: |"]
    for key in [k for k in bench if k.startswith("ib_overhead/")]:
        setting = key.split("/", 1)[1]
        overhead = bench[key]
        lines.append(f"| {setting} | {overhead:+.2%} | {'met' if overhead < 0.03 else 'NOT met'} | "
                     f"{bench[f'speedup/{setting}']:.2f}x |")
    sync = "none found" if bench.get("sync_free") == 1.0 else "FOUND (see stage.log)"
    lines += ["", f"Host-device synchronisation inside the step (fastest setting, PGD-AT + IB-RAR): {sync}.", ""]
    return "\n".join(lines)


def stage_check(ctx: Context, info: dict[str, Any]) -> str:
    import bench_fast_path

    # IBRAR_GPU_CHECK_BENCH=0: the CUDA tests alone (when a row trains beside them, timings would mean nothing).
    with_bench = os.environ.get("IBRAR_GPU_CHECK_BENCH", "1") != "0"
    cap = min(240.0, ctx.remaining() - 300) if with_bench else ctx.remaining() - 30
    tests = run_cuda_tests(ctx, timeout=max(60.0, cap))
    args: list[str] = []
    bench: dict[str, Any] = {}
    if with_bench:
        args = fast_path_args(ctx)
        # the tests' results first, so that they come back even if the call ends inside the benchmark
        write_check(ctx, info, tests, bench, args)
        print(f"== fast-path benchmark: bench/bench_fast_path.py {' '.join(args)}", flush=True)
        bench = bench_fast_path.main(args)
    write_check(ctx, info, tests, bench, args)
    failed = (tests.get("failures", 0) or tests.get("errors", 0) or tests.get("error")
              or tests["exit_code"] not in (0, 5))
    return "finished, with CUDA test failures" if failed else "finished"


def write_check(ctx: Context, info: dict[str, Any], tests: dict[str, Any], bench: dict[str, Any],
                args: list[str]) -> None:
    """$OUT/check.json and check.md from what has run so far (`bench` empty: the benchmark has not run)."""
    goals = {key.split("/", 1)[1]: value < 0.03 for key, value in bench.items() if key.startswith("ib_overhead/")}
    result = {**info, "cuda_tests": tests, "fast_path": {"args": args, **bench},
              "goals": {"ib_rar_under_3pct": goals, "sync_free": bench.get("sync_free") == 1.0 if bench else None}}
    (ctx.out / "check.json").write_text(json.dumps(result, indent=2) + "\n")
    markdown = check_markdown(info, tests, bench, args)
    (ctx.out / "check.md").write_text(markdown)
    if bench or not args:  # the final write
        print(markdown)
