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

from stages import REPO, Context, sigterm_stops


def junit_summary(path: Path) -> dict[str, Any]:
    """Counts and the failing tests' names and first message lines from a pytest JUnit XML file."""
    if not path.is_file():
        return {"error": f"no {path.name}: pytest did not finish"}
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    failed, failed_modules, passed_modules = [], set(), set()
    for case in suite.iter("testcase"):
        module = case.get("classname") or ""
        for kind in ("failure", "error"):
            node = case.find(kind)
            if node is not None:
                message = (node.get("message") or "").strip().splitlines()
                failed.append(f"{case.get('name')}: {message[0][:300] if message else kind}")
                failed_modules.add(module)
        if all(case.find(kind) is None for kind in ("failure", "error", "skipped")):
            passed_modules.add(module)
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return {**counts, "seconds": float(suite.get("time", 0)), "failed": failed,
            "failed_modules": sorted(failed_modules), "passed_modules": sorted(passed_modules)}


# Every test file with CUDA tests: the device checks, and the CUDA-graph step's replay against its eager step.
CUDA_TESTS = ("tests/test_cuda.py", "tests/test_graph_step.py")


def run_cuda_tests(ctx: Context, timeout: float) -> dict[str, Any]:
    xml = ctx.out / "cuda-tests.xml"
    command = [sys.executable, "-m", "pytest", *CUDA_TESTS, "-m", "cuda", "-q", "-rfEs",
               "-p", "no:cacheprovider", f"--junitxml={xml}"]
    print(f"== CUDA tests: {' '.join(command[1:])}", flush=True)
    cut_off = ""
    try:
        with sigterm_stops():  # run.sh's timeout: pytest is killed, and the check still writes what it knows
            rc: int | str = subprocess.run(command, cwd=REPO, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        rc = "timeout"
    except KeyboardInterrupt as stop:
        rc, cut_off = "cut off", str(stop)
        print(f"   CUDA tests stopped: {stop}", flush=True)
    summary = junit_summary(xml)
    summary["exit_code"] = rc
    if cut_off:
        summary["cut_off"] = cut_off
    return summary


GRAPH_TESTS = "tests.test_graph_step"  # the JUnit class of the CUDA-graph step's replay-against-eager tests
EAGER = "train.cuda_graph=false"
SIX_ROWS_STEP_MS = 3.0  # a CE + IB-RAR step at most this: six rows side by side train in one lease (README)


def training_advice(tests: dict[str, Any], bench: dict[str, Any]) -> dict[str, Any]:
    """The lease's training call after this check (README "Running it", order 1: the authors' optimizer), from
    what the check found: the eager step where the graph step's CUDA tests did not pass on this machine (a
    replay that differs from its eager step must not train a row), and all six rows at once only if the step
    the rows will train with is fast enough, else row (6) alone (which a lease fits eagerly)."""
    ran = "error" not in tests and GRAPH_TESTS in tests.get("passed_modules", [])
    graph_ok = ran and GRAPH_TESTS not in tests.get("failed_modules", [])
    why = ["The CUDA-graph step's tests passed on this device" if graph_ok else
           f"The CUDA-graph step's tests ({GRAPH_TESTS}) {'failed' if ran else 'did not run'} on this device: "
           f"the rows train eagerly ({EAGER})"]
    setting = "fp32 + graph" if graph_ok else "fp32"  # the paper configs train in fp32 (train.amp off)
    step = bench.get(f"step_ms/{setting}/CE + IB-RAR")
    six = step is not None and step <= SIX_ROWS_STEP_MS
    if step is None:
        why.append(f"the benchmark did not measure the {setting} CE + IB-RAR step: row (6) alone")
    else:
        rows = "all six rows" if six else "row (6) alone"
        why.append(f"the {setting} CE + IB-RAR step took {step:.1f} ms ({'at most' if six else 'over'} "
                   f"{SIX_ROWS_STEP_MS:g}): {rows}")
    eager = "" if graph_ok else f"IBRAR_GPU_OVERRIDES={EAGER} "
    command = f"IBRAR_GPU_OPTIM=authors {eager}IBRAR_GPU_BUDGET_S=B bash bench/gpu/run.sh table4{'' if six else ' 6'}"
    return {"command": command, "graph": graph_ok, "why": why}


BENCH_S = 180.0  # the benchmark's rounds stop once this long has gone since it started (after at least one)


def fast_path_args(ctx: Context) -> list[str]:
    if ctx.rehearsal:  # tiny: seconds on one CPU thread; random images (the bench writes them)
        return ["--device", "cpu", "--width", "0.0625", "--batch", "8", "--batches", "2", "--rounds", "1",
                "--data-root", str(ctx.data_root / "absent")]
    # the rounds stop in time for the call to write its files: a minute before the call ends (warm-up, capture
    # and the sync check come on top of the rounds, so the budget keeps that minute), and at most BENCH_S after
    # they start, so that the lease keeps most of its time for the rows
    budget = max(30.0, min(BENCH_S, ctx.remaining() - 60))
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
    if tests.get("cut_off"):
        lines.append(f"- The CUDA tests were cut off ({tests['cut_off']}) by the call's time budget.")
    if not bench:
        why = ("not run: the call's time ran out in the CUDA tests" if tests.get("cut_off") else
               "not run in this call (IBRAR_GPU_CHECK_BENCH=0)" if not args else "started, not finished in this call")
        return "\n".join([*lines, "", f"Fast-path benchmark: {why}.", ""])
    settings = [k.split("/", 1)[1] for k in bench if k.startswith("ib_overhead/")] + list(bench.get("unavailable", []))
    lines += ["", f"`python bench/bench_fast_path.py {' '.join(args)}`: the Trainer's step of VGG16, "
              "median of interleaved rounds.", "", bench_fast_path.markdown(bench, settings), "",
              bench_fast_path.goals_markdown(bench_fast_path.goals(bench)), "",
              "| setting | IB-RAR adds to a PGD-AT step | PGD-AT speed-up vs fp32 |", "| --- | ---: | ---: |"]
    for key in [k for k in bench if k.startswith("ib_overhead/")]:
        setting = key.split("/", 1)[1]
        lines.append(f"| {setting} | {bench[key]:+.2%} | {bench[f'speedup/{setting}']:.2f}x |")
    if "sync_free" not in bench:
        sync = "not checked (the benchmark was cut off first)"
    else:
        sync = "none found" if bench["sync_free"] == 1.0 else "FOUND (see stage.log)"
    lines += ["", f"Host-device synchronisation inside the step (fastest setting, PGD-AT + IB-RAR): {sync}.", ""]
    if bench.get("cut_off"):
        lines += [f"The benchmark was cut off ({bench['cut_off']}) after {bench.get('rounds', 0)} of its rounds: "
                  "the timings above are the medians of those.", ""]
    return "\n".join(lines)


def advice_markdown(advice: dict[str, Any]) -> str:
    why = "; ".join(advice["why"])
    return "\n".join(["## The next call", "", f"{why}. With B the reply's lease.budget_left_s:", "",
                      f"    {advice['command']}", ""])


def stage_check(ctx: Context, info: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The CUDA tests, then the benchmark; the status, and the next call's command for stage.json's `advice`
    (a benchmark cut off by run.sh's SIGTERM still gives it, from the rounds it measured; CUDA tests cut off
    give it too, for the eager step and row (6) alone, and the benchmark does not start)."""
    import bench_fast_path

    # IBRAR_GPU_CHECK_BENCH=0: the CUDA tests alone (when a row trains beside them, timings would mean nothing).
    with_bench = os.environ.get("IBRAR_GPU_CHECK_BENCH", "1") != "0"
    cap = min(240.0, ctx.remaining() - 300) if with_bench else ctx.remaining() - 30
    tests = run_cuda_tests(ctx, timeout=max(60.0, cap))
    args: list[str] = []
    bench: dict[str, Any] = {}
    if tests.get("cut_off"):  # the call's time is up: no benchmark, but the advice (eager, row (6) alone)
        advice = write_check(ctx, info, tests, bench, args)
        return ("stopped by the call's time budget inside the CUDA tests: call again for the whole check",
                {"advice": advice["command"]})
    cut_off = ""
    if with_bench:
        args = fast_path_args(ctx)
        # the tests' results first, so that they come back even if the call ends inside the benchmark
        write_check(ctx, info, tests, bench, args)
        print(f"== fast-path benchmark: bench/bench_fast_path.py {' '.join(args)}", flush=True)
        so_far: dict[str, Any] = {}
        try:
            with sigterm_stops():  # run.sh's timeout: the advice still comes from the rounds measured
                bench = bench_fast_path.main(args, so_far=so_far)
        except KeyboardInterrupt as stop:
            rounds = so_far.get("rounds", 0)
            print(f"   benchmark stopped: {stop} ({rounds} of its rounds measured)", flush=True)
            bench = {**so_far, "cut_off": str(stop)} if so_far else {}
            cut_off = f"the benchmark was cut off by the call's time budget ({rounds} of its rounds measured)"
    advice = write_check(ctx, info, tests, bench, args)
    failed = (tests.get("failures", 0) or tests.get("errors", 0) or tests.get("error")
              or tests["exit_code"] not in (0, 5))
    status = "finished, with CUDA test failures" if failed else "finished"
    return (f"{status}; {cut_off}" if cut_off else status), {"advice": advice["command"]}


def write_check(ctx: Context, info: dict[str, Any], tests: dict[str, Any], bench: dict[str, Any],
                args: list[str]) -> dict[str, Any]:
    """$OUT/check.json and check.md from what has run so far (`bench` empty: the benchmark has not run); the
    advice they give."""
    import bench_fast_path

    advice = training_advice(tests, bench)
    result = {**info, "cuda_tests": tests, "fast_path": {"args": args, **bench},
              "goals": {"issue_25": bench_fast_path.goals(bench),
                        "sync_free": bench["sync_free"] == 1.0 if "sync_free" in bench else None},
              "advice": advice}
    (ctx.out / "check.json").write_text(json.dumps(result, indent=2) + "\n")
    markdown = check_markdown(info, tests, bench, args) + "\n" + advice_markdown(advice)
    (ctx.out / "check.md").write_text(markdown)
    if bench or not args:  # the final write
        print(markdown)
    return advice
