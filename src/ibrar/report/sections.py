"""The generated sections beyond the paper's tables: the scale study, Figure 2's networks and attack-steps
curves, the benchmarks, the GPU check, and the GPU kit's paper-scale runs (Table 4 and Figure 2 per optimizer,
Table 1) with the runs a lease ran out on."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ibrar.experiments import fig2
from ibrar.experiments import scale as study
from ibrar.experiments.paper_numbers import TABLE1, TABLE1_COLUMNS, TABLE4, TABLE4_COLUMNS
from ibrar.experiments.render import markdown_table, render_table
from ibrar.ledger_evidence import setting_label
from ibrar.report.collect import (
    ReportError,
    collected_experiment,
    group_dirs,
    partial_folder,
    read_json,
    relative,
)
from ibrar.report.provenance import eps_text, evaluation_notes, median_l2_line, not_run, source_line
from ibrar.report.tables import table1_tables, table4_table, table6_table
from ibrar.rounding import fixed
from ibrar.run_folder import RunFolder
from ibrar.run_names import split_variant, variants


def scale_tables(results: Path, root: Path, scale: str = "cpu") -> str:
    """The scale study: a table per axis (width, training length) of Table 4's rows (1), (2), (6) on VGG16,
    mean ± std over the seeds that ran, with the paper's Table 4 values at its full setting below."""
    folder = results / f"scale-{scale}"
    experiment = collected_experiment("scale", scale, folder)
    tables, _ = study.study_tables(experiment, folder)
    if not group_dirs(experiment, folder, [group for table in tables for group in table.spec.groups]):
        return not_run("Scale study", [folder], root)
    out: list[str] = []
    for table in tables:
        title = f"**{table.title}**"
        dirs = group_dirs(experiment, folder, table.spec.groups)
        if not dirs:
            runs = [folder / spec.name for group in table.spec.groups for spec in experiment.runs_of(group)]
            out += [not_run(title, runs, root), ""]
            continue
        out += [title, "", *render_table(table), "", *evaluation_notes(dirs), source_line(dirs, root), ""]
        labelled = [(row.label if len(experiment.runs_of(row.group)) == 1 else f"{row.label}, `{d.name}`", d)
                    for row in table.rows for d in group_dirs(experiment, folder, [row.group])]
        out += attack_strength_tables(labelled)
    out.append("Each cell of ours: the mean over the seeds that ran (± their standard deviation where two ran); "
               "the paper's rows are its Table 4 values at its full setting. Width 0.25 with 10,000 images and 10 "
               "epochs is Table 4's cpu-scale setting.")
    return "\n".join(out)


def percent(fraction: Any) -> str:
    """A fraction of eval.json as a percentage with one decimal ('-' where it is missing)."""
    return "-" if fraction is None else fixed(100 * fraction, 1)


_STAGES = (("clean", "Natural"), ("apgd-ce", "APGD-CE"), ("apgd-t", "APGD-T"), ("fab-t", "FAB-T"),
           ("square", "Square"))


def attack_strength_tables(labelled: Sequence[tuple[str, Path]]) -> list[str]:
    """For the runs whose eval.json holds attack-steps curves: accuracy by number of steps of each attack family,
    then the accuracy left after each stage of the reference AutoAttack. Where a 10-step attack and AutoAttack
    disagree, these say what closes the gap: more steps of the same attack, or AutoAttack's other losses."""
    runs = [(label, result) for label, result in ((label, RunFolder(d).require_evaluation()) for label, d in labelled)
            if result.curves]
    if not runs:
        return []
    steps = sorted({int(s) for _, result in runs for curve in result.curves.values() for s in curve})
    body = [[label, _family_label(family), *[percent(curve.get(str(s))) for s in steps]]
            for label, result in runs for family, curve in result.curves.items()]
    eps = {result.eps for _, result in runs}
    radius = eps_text(eps.pop() if len(eps) == 1 else None)
    out = [f"Accuracy by number of attack steps (the same evaluations; PGD and NI-FGSM at {radius}, CW-L2 "
           "unbounded):", "",
           *markdown_table(["run", "attack", *[f"{s} steps" if s != 1 else "1 step" for s in steps]], body), ""]
    staged = [(label, result.autoattack["stages"]) for label, result in runs
              if result.autoattack and result.autoattack.get("stages")]
    if staged:
        out += ["Accuracy left after each stage of the reference AutoAttack (each stage attacks only the examples "
                "the stages before it left correctly classified):", "",
                *markdown_table(["run", *[name for _, name in _STAGES]],
                                 [[label, *[percent(stages.get(key)) for key, _ in _STAGES]]
                                  for label, stages in staged]), ""]
    return out


def _family_label(family: str) -> str:
    """An attack-steps curve's name in the tables (eval.json's `pgd`, `cw`, `nifgsm`: PGD, CW-L2, NI-FGSM)."""
    return fig2.FAMILY_NAMES.get(family, family)


def fig2_tables(results: Path, root: Path, scale: str = "cpu", variant: str = "") -> str:
    """Figure 2's networks under PGD-10, CW-L2, NI-FGSM and AutoAttack (clean beside the paper's), then the
    attack-steps curves as one table per attack family (`variant`: the GPU kit's folders `<run><variant>`)."""
    folder = results / f"fig2-{scale}"
    experiment = collected_experiment("fig2", scale, folder, variant)
    dirs = group_dirs(experiment, folder, [group for _, group in fig2.ROWS])
    if not dirs:
        return not_run("Figure 2", [folder], root)
    main, *curves = fig2.network_tables(experiment, folder)
    out = [*render_table(main), "", *median_l2_line(dirs, experiment.scale.attack("cw")),
           *evaluation_notes(dirs), source_line(dirs, root), ""]
    curve_dirs = [d for d in dirs if RunFolder(d).require_evaluation().curves]
    if not curve_dirs:
        return "\n".join([*out, f"Attack-steps curves: not run (no eval.json in `{relative(folder, root)}/` "
                                 "holds `curves`)."])
    for table in curves:
        out += [f"**{table.title}**", "", *render_table(table), ""]
    out.append(source_line(curve_dirs, root))
    return "\n".join(out)


# ---- benchmarks ---------------------------------------------------------------------------------------------------


BENCH_FIELDS = ("title", "command", "seconds", "machine", "date", "torch", "output")


def read_bench(folder: Path) -> list[tuple[Path, dict[str, Any]]]:
    """The benchmark sections under results/bench/ with their files, in the order run_all.py runs them."""
    sections = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        section = json.loads(path.read_text())
        missing = [k for k in BENCH_FIELDS if k not in section]
        if missing:
            raise ReportError(f"{path}: missing {', '.join(missing)}; bench/run_all.py writes these artifacts")
        sections.append((section.get("order", 0), path, section))
    return [(p, s) for _, p, s in sorted(sections, key=lambda t: (t[0], t[1].name))]


def bench_sections(results: Path, root: Path) -> str:
    folder = results / "bench"
    sections = read_bench(folder)
    if not sections:
        return not_run("Benchmarks", [folder], root)
    lines: list[str] = []
    for path, s in sections:
        commit = f"commit `{s['git_commit'][:7]}`" if s.get("git_commit") else "commit not recorded"
        seconds = "time not recorded" if s["seconds"] is None else f"{s['seconds']:.0f} s"
        lines += [f"## {s['title']}", "",
                  f"`{s['command']}`: {seconds}, measured {s['date']} on {s['machine']} "
                  f"(torch {s['torch']}, {commit}; `{relative(path, root)}`).", ""]
        if s.get("note"):
            lines += [s["note"], ""]
        lines += ["```", s["output"].rstrip("\n"), "```", ""]
    return "\n".join(lines).rstrip("\n")


def gpu_check_section(results: Path, root: Path) -> str:
    """The GPU kit's `check` stage (CUDA tests and the fast-path timings), as it came back from the device."""
    folder = results / "gpu-check"
    report_md, stage_json = folder / "check.md", folder / "stage.json"
    if not report_md.is_file():
        return f"The GPU check: not run yet (no check.md in `{relative(folder, root)}/`)."
    stage = read_json(stage_json) if stage_json.is_file() else {}
    where = ", ".join(str(stage[k]) for k in ("device", "torch") if stage.get(k)) or "device not recorded"
    when = stage.get("started_utc", "date not recorded")
    minutes = f"{stage['minutes']} minutes" if stage.get("minutes") is not None else "minutes not recorded"
    lines = [f"`bash bench/gpu/run.sh check` on {where}, started {when}, {minutes} "
             f"(`{relative(folder, root)}`).", "", report_md.read_text().rstrip("\n")]
    earlier = sorted((folder / "history").glob("*-check.json"))
    if earlier:
        lines += ["", "Earlier checks (`history/`; the commits that follow each say what was fixed):", ""]
        for path in earlier:
            check = read_json(path)
            tests = check.get("cuda_tests", {})
            stage = folder / "history" / path.name.replace("-check.json", "-stage.json")
            started = read_json(stage).get("started_utc", path.name[:17]) if stage.is_file() else path.name[:17]
            failed = "; ".join(name.split(":")[0] for name in tests.get("failed", [])) or "none"
            lines.append(f"- {started} on {check.get('device', 'device not recorded')}: {tests.get('passed', 0)} "
                         f"passed, {tests.get('failures', 0)} failed ({failed})")
    bench = folder / "fast-path.json"
    if bench.is_file():
        record = read_json(bench)
        lines += ["", f"`{record['command']}` on {record['device']} (torch {record['torch']}), started "
                  f"{record['started_utc']}: {record['note']}.", "", "```", record["output"].rstrip("\n"), "```"]
    return "\n".join(lines)


def table1_paper_tables(results: Path, root: Path) -> str:
    """Table 1 at the paper's scale, as the GPU kit's `table1` stage brings its runs back, and below it the runs a
    lease ran out on."""
    partial = paper_partial_table(results, root, "table1")
    return table1_tables(results, root, "paper") + ("\n\n" + partial if partial else "")


def per_variant(results: Path, experiment: str, render: Callable[[str], str]) -> list[str]:
    """At paper scale, a table per name variant of the GPU kit's run folders (`ibrar.run_names`: `-authors-optim`
    for the authors' code's optimizer) that has evaluated runs, headed by the setting its runs' configs trained;
    `render(variant)` draws it."""
    folder = results / f"{experiment}-paper"
    tables = []
    for variant in variants(experiment, "paper", folder):
        collected = collected_experiment(experiment, "paper", folder, variant)
        dirs = group_dirs(collected, folder, collected.tables[0].groups)
        if dirs:
            label = setting_label(RunFolder(dirs[0]).config_dict())
            tables.append(f"**{label[0].upper()}{label[1:]}** (run folders `<row>{variant}`):\n\n{render(variant)}")
    return tables


def fig2_paper_tables(results: Path, root: Path) -> str:
    """Figure 2 at the paper's scale, as the GPU kit's `fig2` stage brings its networks back: a set of tables per
    optimizer it trained with."""
    found = per_variant(results, "fig2", lambda variant: fig2_tables(results, root, "paper", variant))
    return "\n\n".join(found or [fig2_tables(results, root, "paper")])


def table4_paper_table(results: Path, root: Path) -> str:
    """Table 4 at the paper's scale, as the GPU kit's `table4-<row>` stages bring it back: a table for each
    optimizer the kit trained with, headed by the setting its runs' configs trained; below them the rows a lease
    ran out on before they were trained."""
    found = per_variant(results, "table4", lambda variant: table4_table(results, root, "paper", variant))
    partial = paper_partial_table(results, root)
    return "\n\n".join(found or [table4_table(results, root, "paper")]) + ("\n\n" + partial if partial else "")


def table6_paper_table(results: Path, root: Path) -> str:
    """Table 6 at the paper's scale: Table 4's rows (1) and (6) and Table 1's PGD-AT + IB-RAR run as the GPU kit's
    `table4` and `table1` stages evaluate them (its attacks on AutoAttack's seeded subset), a table per optimizer."""
    found = per_variant(results, "table6", lambda variant: table6_table(results, root, "paper", variant))
    return "\n\n".join(found or [table6_table(results, root, "paper")])


@dataclass(frozen=True)
class PartialColumns:
    """What a table of paper-scale runs a lease ran out on shows of each run's whole-test-set piece, beside the
    paper's numbers of the same columns."""

    table: str  # "Table 4's rows"
    keys: tuple[str, ...]  # eval.json's metrics
    labels: tuple[str, ...]  # their headers
    paper: dict[str, dict[str, float]]  # the paper's numbers by run group
    paper_columns: tuple[str, ...]
    paper_labels: str


PARTIAL_COLUMNS = {
    "table4": PartialColumns("Table 4's rows", ("clean", "pgd10", "nifgsm", "fgsm"),
                             ("Natural", "PGD-10", "NI-FGSM", "FGSM"), TABLE4, TABLE4_COLUMNS, "Nat / PGD / NI / FGSM"),
    "table1": PartialColumns("Table 1's runs", ("clean", "pgd10", "cw", "fgsm", "fab", "nifgsm"),
                             ("Natural", "PGD-10", "CW-L2", "FGSM", "FAB", "NI-FGSM"), TABLE1, TABLE1_COLUMNS,
                             "Nat / PGD / CW / FGSM / FAB / NI"),
}


def paper_partial_table(results: Path, root: Path, experiment: str = "table4") -> str:
    """Paper-scale runs a lease ran out on (the GPU went back first; its disk, checkpoint included, with it): how
    far they trained, the Trainer's per-epoch monitor, and the paper's attacks on the whole test set when that
    piece of the evaluation ran (eval-full.json). AutoAttack did not run, so these are not the table's rows."""
    shown = PARTIAL_COLUMNS[experiment]
    finished = results / f"{experiment}-paper"
    folder = partial_folder(results, finished.name)
    runs = [run for run in map(RunFolder, sorted(folder.glob("*"))) if run.metrics_file.is_file()
            and run.gpu_calls_file.is_file() and not RunFolder(finished / run.name).has_evaluation()]
    rows, calls, recovered = [], [], []
    for run in runs:
        metrics, gpu = run.metrics(), run.gpu_calls()
        last, per_epoch = metrics[-1], sorted(m["seconds"] for m in metrics if "seconds" in m)
        full = run.partial_evaluation()
        if full:
            measured = " / ".join("-" if (value := full.metric(k)) is None else fixed(value, 1) for k in shown.keys)
            if full.recovered_from:
                recovered.append(f"{run.name}'s whole-test-set numbers come from its {full.recovered_from}")
        else:
            measured = "not evaluated"
        paper = shown.paper.get(split[0], {}) if (split := split_variant(run.name, shown.paper)) else {}
        rows.append([run.name, f"{last['epoch']} of {run.config().train.epochs}",
                     fixed(100 * last["test_clean_acc"], 1), fixed(100 * last["test_pgd10_acc"], 1),
                     f"{per_epoch[len(per_epoch) // 2]:.1f}", measured,
                     " / ".join(fixed(paper[c], 2) for c in shown.paper_columns) if paper else "-",
                     gpu.get("device", "not recorded")])
        source = gpu.get("source") or {}
        commit = f"commit `{str(source.get('commit', ''))[:7]}`" if source.get("commit") else "commit not recorded"
        dirty = " with uncommitted changes" if source.get("uncommitted_changes") else ""
        calls += [f"{run.name}: {c['started_utc']}, {c['minutes']} min, torch {c['torch']}, {commit}{dirty}"
                  for c in gpu.get("calls", [])]
    if not rows:
        return ""
    header = ["run (not finished)", "epochs trained", "clean % (monitor)", "PGD-10 % (monitor)", "median s/epoch",
              f"whole test set: {' / '.join(shown.labels)}", f"paper ({shown.paper_labels})", "device"]
    notes = [f"{'; '.join(recovered)}.", ""] if recovered else []
    return "\n".join([
        f"Not finished when the lease ended, so not {shown.table}: trained part of the way, or trained and evaluated "
        "with the paper's attacks on the whole test set but not yet with AutoAttack (the monitor: clean and PGD-10 "
        f"accuracy on the first `train.eval_subset` test images after the last epoch; `{relative(folder, root)}/`):",
        "", *markdown_table(header, rows), "", *notes, "GPU calls: " + "; ".join(calls) + "."])
