"""The generated tables of single runs (the quickstart pair, the CE baseline) and of the paper's Tables 1, 3, 4
and 6: each experiment's declared tables measured and rendered as results.md shows them
(`ibrar.experiments.render`), with the lines that say where their numbers come from."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ibrar.experiments import table3
from ibrar.experiments.measure import measure
from ibrar.experiments.paper_numbers import TABLE3_ROBUST_LAYERS
from ibrar.experiments.render import has_paper, markdown_table, render_table
from ibrar.experiments.table_spec import Metric, TableSpec
from ibrar.ledger_evidence import seed_runs
from ibrar.report.collect import collected_experiment, group_dirs, n_runs
from ibrar.report.provenance import (
    evaluation_notes,
    linf_lists,
    linf_worst_case,
    median_l2_line,
    not_run,
    source_line,
)
from ibrar.rounding import fixed, signed
from ibrar.run_folder import RunFolder

# The docs show eval.json's worst case only where eval.json says it is over the L-infinity attacks alone.
LINF: dict[str, Metric] = {"worst_case": linf_worst_case}
_ATTACK_LABELS = {"fgsm": "FGSM", "pgd10": "PGD-10", "autoattack": "AutoAttack"}


def runs_table(
    folder: Path,
    rows: Sequence[tuple[str, str]],
    root: Path,
    required: Sequence[str],
    optional: Sequence[str],
    what: str,
) -> str:
    """Rows are (label, run folder name); columns 'clean' plus attacks; optional ones only if evaluated."""
    runs = [(label, folder / name) for label, name in rows]
    done = [d for _, d in runs if RunFolder(d).has_evaluation()]
    if not done:
        return not_run(what, [folder], root)
    results = {d: RunFolder(d).require_evaluation() for d in done}
    columns = ["clean", *required]
    columns += [a for a in optional if any(r.metric(a) is not None for r in results.values())]
    header = ["", *[_ATTACK_LABELS.get(c, c) for c in columns]]
    body = []
    for label, run_dir in runs:
        if run_dir not in results:
            body.append([f"{label}", *["not run"] * len(columns)])
            continue
        values = [results[run_dir].metric(c) for c in columns]
        body.append([label, *["-" if v is None else f"{fixed(v, 1)}%" for v in values]])
    return "\n".join([*markdown_table(header, body), "", source_line(done, root)])


def quickstart_table(results: Path, root: Path) -> str:
    return runs_table(
        results / "quickstart",
        [("IB-RAR (quickstart)", "quickstart"), ("CE only (quickstart-ce)", "quickstart-ce")],
        root,
        required=("fgsm", "pgd10"),
        optional=("autoattack",),
        what="The quickstart pair",
    )


def ce_fast_table(results: Path, root: Path) -> str:
    return runs_table(
        results / "baselines",
        [("CE, VGG16 width 0.25 (cpu-ce-fast)", "cpu-ce-fast")],
        root,
        required=(),
        optional=("fgsm", "pgd10", "autoattack"),
        what="The CPU-sized CE baseline",
    )


def table1_tables(results: Path, root: Path, scale: str = "cpu") -> str:
    """Table 1 per method pair (without / with IB-RAR), ours beside the paper's, with each pair's source."""
    return adversarial_training_tables("table1", results, root, scale)


def table2_tables(results: Path, root: Path, scale: str = "cpu") -> str:
    """Table 2, Table 1's comparison on ResNet18 / CIFAR-10 and WRN-28-10 / CIFAR-100 (the paper's numbers are an
    image in our copy, so no paper rows are shown)."""
    return adversarial_training_tables("table2", results, root, scale)


def adversarial_training_tables(name: str, results: Path, root: Path, scale: str) -> str:
    """Tables 1 and 2: one table per (network, dataset, method) pair without / with IB-RAR, with its sources."""
    folder = results / f"{name}-{scale}"
    experiment = collected_experiment(name, scale, folder)
    out: list[str] = []
    worst_lists: dict[str, None] = {}
    for spec in experiment.tables:
        title = f"**{spec.title}**"
        dirs = group_dirs(experiment, folder, spec.groups)
        if not dirs:
            out += [not_run(title, [folder / group for group in spec.groups], root), ""]
            continue
        out += [title, "", *render_table(measure(spec, experiment, folder, LINF)), "",
                *median_l2_line(dirs, experiment.scale.attack("cw")), *evaluation_notes(dirs),
                source_line(dirs, root), ""]
        worst_lists.update(linf_lists(dirs))
    listed = [w for w in worst_lists if w]
    note = ("CW-L2 is an L2 attack (unbounded in L∞) and is reported in its own column; it never enters the L∞ "
            "worst case, which is the per-example worst over the L∞ attacks at the evaluation's ε that eval.json "
            "lists under `worst_cases`")
    note += f" ({'; '.join(listed)})." if listed else "."
    if "" in worst_lists:
        note += " An eval.json without `worst_cases` (written before threat models were separated) shows no L∞ " \
                "worst case."
    return "\n".join([*out, note])


def table4_table(results: Path, root: Path, scale: str = "cpu", variant: str = "") -> str:
    """Table 4's rows with VGG16 and ResNet18 side by side, each beside the paper's (`variant`: the runs named
    `<row><variant>`, as the GPU kit names those of the authors' optimizer)."""
    folder = results / f"table4-{scale}"
    experiment = collected_experiment("table4", scale, folder, variant)
    spec = experiment.tables[0]
    dirs = group_dirs(experiment, folder, spec.groups)
    if not dirs:
        return not_run("Table 4", [folder], root)
    return "\n".join([*render_table(measure(spec, experiment, folder)), "", *evaluation_notes(dirs),
                      " ".join([*spec.notes, source_line(dirs, root)])])


def table6_table(results: Path, root: Path, scale: str = "cpu", variant: str = "") -> str:
    """Table 6, the adaptive attack PGD_AD against plain CE, plain IB-RAR and PGD-AT + IB-RAR networks (`variant`:
    the runs named `<network><variant>`, as the GPU kit names those of the authors' optimizer)."""
    folder = results / f"table6-{scale}"
    experiment = collected_experiment("table6", scale, folder, variant)
    spec = experiment.tables[0]
    dirs = group_dirs(experiment, folder, spec.groups)
    if not dirs:
        return not_run("Table 6", [folder], root)
    table = measure(spec, experiment, folder, LINF)
    listed = [w for w in linf_lists(dirs) if w]
    note = "" if has_paper(table) else ("The paper's Table 6 is an image in our copy of the paper: it has no numbers "
                                        "to show here, only the findings its text states. ")
    note += "The L∞ worst case is the per-example worst over the L∞ attacks that eval.json lists under `worst_cases`"
    note += f" ({'; '.join(listed)})." if listed else " (an eval.json without `worst_cases` shows none)."
    return "\n".join([*render_table(table), "", note, "", *evaluation_notes(dirs), source_line(dirs, root)])


def table3_table(results: Path, root: Path, scale: str = "cpu") -> str:
    """Table 3: one network per IB layer, all layers, the robust layers and CE only, and the layers that the
    selection procedure (ibrar.experiments.table3.robust_layers) names from these runs."""
    folder = results / f"table3-{scale}"
    experiment = collected_experiment("table3", scale, folder)
    spec = experiment.tables[0]
    dirs = group_dirs(experiment, folder, spec.groups)
    if not dirs:
        return not_run("Table 3", [folder], root)
    table = measure(spec, experiment, folder)
    found, reference = table3.robust_layers(table)
    margin = f"{table3.MARGIN_PP:g}"
    layers = table3.single_layers(spec)
    evaluated = [layer for layer in layers if n_runs(experiment, folder, f"layer-{layer}")]
    paper = ", ".join(TABLE3_ROBUST_LAYERS)
    if reference is None:
        named = (f"Robust layers: none can be named yet, since CE only has not been evaluated (a layer is robust "
                 f"when its network's PGD-10 accuracy beats CE only's by at least {margin} points).")
    else:
        named = (f"Robust layers the procedure names (PGD-10 at least {margin} points above CE only): "
                 f"{', '.join(found) or 'none'}")
        if len(evaluated) < len(layers):
            named += f", from {len(evaluated)} of the {len(layers)} single-layer networks"
        named += f"; the paper names {paper}."
    lines = [*render_table(table), "", named, "", _clean_by_seed(folder, spec)]
    return "\n".join([*lines, "", *evaluation_notes(dirs), source_line(dirs, root)])


def _clean_by_seed(folder: Path, spec: TableSpec) -> str:
    """Each IB network's clean accuracy minus CE only's of the same seed, seed by seed: the table's means hide
    whether every seed moved the same way, which is what an effect of the IB term on clean accuracy needs."""
    reference = seed_runs(folder, table3.REFERENCE)
    seeds = sorted(set(reference))
    parts = []
    for row in spec.rows:
        if row.group == table3.REFERENCE:
            continue
        runs = seed_runs(folder, row.group)
        gains = {seed: a - b for seed in sorted(set(runs) & set(reference))
                 if (a := runs[seed].value("clean")) is not None and (b := reference[seed].value("clean")) is not None}
        if gains:
            # a network missing some of CE only's seeds names its own, else its values would read as the header's
            # first seeds
            label = row.label if list(gains) == seeds else \
                f"{row.label} (seed{'s' * (len(gains) > 1)} {', '.join(map(str, gains))} only)"
            above = sum(1 for d in gains.values() if d > 0)
            parts.append(f"{label} {', '.join(signed(d, 1) for d in gains.values())} ({above} of {len(gains)} above)")
    if not parts:
        return "Clean accuracy against CE only of the same seed: no seed evaluated in both yet."
    return ("Clean accuracy minus CE only's of the same seed, in points, seed by seed (seeds "
            f"{', '.join(map(str, seeds))}): " + "; ".join(parts) + ".")
