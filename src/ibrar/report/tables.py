"""The generated tables of single runs (the quickstart pair, the CE baseline) and of the paper's Tables 1, 3, 4
and 6, each beside the paper's numbers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ibrar.experiments import table1, table3, table4, table6
from ibrar.experiments.base import eval_metric, read_eval
from ibrar.experiments.paper_numbers import TABLE1, TABLE3_ROBUST_LAYERS, TABLE4
from ibrar.experiments.results import Cell, eval_table, group_values
from ibrar.report.collect import collected_experiment, group_dirs, has_eval, n_runs
from ibrar.report.formatting import HEADER, cell_texts, differences, markdown_table, measured_text, paper_rows, signed
from ibrar.report.provenance import (
    evaluation_notes,
    linf_lists,
    linf_worst_case,
    median_l2_line,
    not_run,
    source_line,
)

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
    done = [d for _, d in runs if has_eval(d)]
    if not done:
        return not_run(what, [folder], root)
    results = {d: read_eval(d) for d in done}
    columns = ["clean", *required]
    columns += [a for a in optional if any(eval_metric(r, a) is not None for r in results.values())]
    header = ["", *[_ATTACK_LABELS.get(c, c) for c in columns]]
    body = []
    for label, run_dir in runs:
        if run_dir not in results:
            body.append([f"{label}", *["not run"] * len(columns)])
            continue
        values = [eval_metric(results[run_dir], c) for c in columns]
        body.append([label, *["-" if v is None else f"{v:.1f}%" for v in values]])
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
    folder = results / f"table1-{scale}"
    experiment = collected_experiment("table1", scale, folder)
    attack_columns = [c for c in table1.COLUMNS if c[1] != "worst_case"]
    labels = [label for label, _ in table1.COLUMNS]
    header = ["method", *[HEADER.get(label, label) for label in labels]]
    out: list[str] = []
    worst_lists: dict[str, None] = {}
    for block_title, block_rows in experiment.info["rows"]:
        for (base_label, base), (ib_label, ib) in zip(block_rows[::2], block_rows[1::2], strict=True):
            title = f"**{base_label}, {block_title}**"
            dirs = group_dirs(experiment, folder, (base, ib))
            if not dirs:
                out += [not_run(title, [folder / base, folder / ib], root), ""]
                continue
            table = eval_table(experiment, folder, title, [(base_label, base), (ib_label, ib)], attack_columns, TABLE1)
            for row in table.rows:
                row.cells["Worst case"] = Cell(group_values(experiment, folder, row.group, linf_worst_case))
            ours = [[f"{row.label} (ours, {scale})",
                     *[measured_text(row.cells[c], 2, bool(group_dirs(experiment, folder, [row.group])))
                       for c in labels]] for row in table.rows]
            paper = [[f"{row.label} (paper)", *["-" if row.cells[c].paper is None else f"{row.cells[c].paper:.2f}"
                                                for c in labels]] for row in table.rows]
            out += [title, "", *markdown_table(header, [
                *ours, ["difference", *differences([r.cells for r in table.rows], labels, "mean")],
                *paper, ["difference (paper)", *differences([r.cells for r in table.rows], labels, "paper")],
            ]), "", *median_l2_line(dirs, experiment.scale.attack("cw")), *evaluation_notes(dirs),
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


_TABLE4_COLUMNS = ("Natural", "PGD", "NIFGSM", "FGSM", "AutoAttack")


def table4_table(results: Path, root: Path, scale: str = "cpu") -> str:
    """Table 4's rows with VGG16 and ResNet18 side by side, each beside the paper's."""
    folder = results / f"table4-{scale}"
    experiment = collected_experiment("table4", scale, folder)
    groups = [f"{model}-{row}" for model, _ in table4.MODELS for row, _ in table4.ROWS]
    dirs = group_dirs(experiment, folder, groups)
    if not dirs:
        return not_run("Table 4", [folder], root)
    columns = [c for c in table4.COLUMNS if c[0] in _TABLE4_COLUMNS]
    tables = {model: eval_table(experiment, folder, label, [(row_label, f"{model}-{row}")
                                                              for row, row_label in table4.ROWS], columns, TABLE4)
              for model, label in table4.MODELS}
    header = ["row"]
    for _, label in table4.MODELS:
        header += [f"{label}: Natural / PGD-10 / NI-FGSM / FGSM / AA", f"paper {label} (Nat / PGD / NI / FGSM)"]
    body = []
    for i, (_, row_label) in enumerate(table4.ROWS):
        line = [row_label]
        for model, _ in table4.MODELS:
            row = tables[model].rows[i]
            if group_dirs(experiment, folder, [row.group]):
                line.append(" / ".join(measured_text(row.cells[c], 1) for c in _TABLE4_COLUMNS))
            else:
                line.append("not run")
            cells = row.cells
            paper = [cells[c].paper for c in _TABLE4_COLUMNS[:-1]]
            line.append(" / ".join("-" if p is None else f"{p:.2f}" for p in paper))
        body.append(line)
    return "\n".join([*markdown_table(header, body), "", *evaluation_notes(dirs),
                      "AA = AutoAttack. " + source_line(dirs, root)])


def table6_table(results: Path, root: Path, scale: str = "cpu") -> str:
    """Table 6, the adaptive attack PGD_AD against plain CE, plain IB-RAR and PGD-AT + IB-RAR networks."""
    folder = results / f"table6-{scale}"
    experiment = collected_experiment("table6", scale, folder)
    dirs = group_dirs(experiment, folder, [group for group, _, _ in table6.NETWORKS])
    if not dirs:
        return not_run("Table 6", [folder], root)
    table = table6.adaptive_table(experiment, folder)
    for row in table.rows:  # the worst case over the L-inf attacks only, as eval.json declares it
        row.cells["Worst case"] = Cell(group_values(experiment, folder, row.group, linf_worst_case))
    columns = [label for label, _ in table6.COLUMNS]
    body = [[f"{row.label} (ours, {scale})", *cell_texts(row.cells, columns, n_runs(experiment, folder, row.group) > 0)]
            for row in table.rows]
    paper = paper_rows(table.rows, columns, lambda row: f"{row.label} (paper)")
    body += paper
    listed = [w for w in linf_lists(dirs) if w]
    note = "" if paper else ("The paper's Table 6 is an image in our copy of the paper: it has no numbers to show "
                             "here, only the findings its text states. ")
    note += "The L∞ worst case is the per-example worst over the L∞ attacks that eval.json lists under `worst_cases`"
    note += f" ({'; '.join(listed)})." if listed else " (an eval.json without `worst_cases` shows none)."
    return "\n".join([*markdown_table(["network", *[HEADER.get(c, c) for c in columns]], body), "", note, "",
                      *evaluation_notes(dirs), source_line(dirs, root)])


def table3_table(results: Path, root: Path, scale: str = "cpu") -> str:
    """Table 3: one network per IB layer, all layers, the robust layers and CE only, and the layers that the
    selection procedure (ibrar.experiments.table3.robust_layers) names from these runs."""
    folder = results / f"table3-{scale}"
    experiment = collected_experiment("table3", scale, folder)
    dirs = group_dirs(experiment, folder, [group for _, group in experiment.info["rows"]])
    if not dirs:
        return not_run("Table 3", [folder], root)
    table = table3.layer_table(experiment, folder)
    found, reference = table3.robust_layers(table)
    columns = [label for label, _ in table3.COLUMNS]
    header = ["network", *[HEADER.get(c, c) for c in columns], "PGD-10 − CE only"]
    body = []
    for row in table.rows:
        pgd = row.cells["PGD"].mean
        gain = "-" if row.group == "ce" or None in (pgd, reference) else signed(pgd - reference, 1)
        body.append([row.label, *cell_texts(row.cells, columns, n_runs(experiment, folder, row.group) > 0), gain])
    margin = f"{table3.MARGIN_PP:g}"
    layers = list(experiment.info["layers"])
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
    return "\n".join([*markdown_table(header, body), "", named, "", *evaluation_notes(dirs),
                      source_line(dirs, root)])
