"""`ibrar report`: every table of numbers in README.md, docs/reproduction.md and bench/RESULTS.md is generated
from the small run artifacts committed under `results/`, so that each number traces back to the run that made it.

`collect_run` copies a finished run's small files (never a checkpoint) into `results/`; `render_docs` rewrites
the text between `<!-- report:NAME -->` and `<!-- /report -->` in the docs and leaves the prose around it alone;
`check_docs` names the tables whose text no longer matches the artifacts.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ibrar.errors import InputError
from ibrar.experiments.base import eval_metric, read_eval, read_metrics
from ibrar.ledger import claims_section

RESULTS_DIR = "results"
# What a run folder contributes to results/: config, versions and hardware, per-epoch log, evaluation.
ARTIFACTS = ("config.yaml", "meta.json", "metrics.jsonl", "eval.json", "info_plane.jsonl",
             "gpu.json")  # gpu.json: the GPU kit's per-call minutes, when a run trained over several calls
# what a run trained on a GPU lease brings back instead of its weights: the inputs of Figure 3 and Table 5
# (ibrar.plots.FEATURES_FILE, CONFUSION_FILE), copied like the artifacts when the run has them
FIGURE_INPUTS = ("tsne-features.npz", "confusion-pgd10.json")
PARTIAL_EVAL = "eval-full.json"  # a paper-scale row's whole-test-set evaluation, before AutoAttack's subset ran
OPTIONAL_SIZE_LIMIT = 1 << 20  # bytes; a larger info_plane.jsonl stays behind (the others are always small)
MARKER = re.compile(r"(<!-- report:(?P<name>[A-Za-z0-9_.-]+) -->\n)(?P<body>.*?)(<!-- /report -->)", re.S)


class ReportError(InputError):
    """A run that cannot be collected, or docs whose markers do not match the known tables."""


# ---- collecting run folders -------------------------------------------------------------------------


def partial_folder(results: Path, experiment_folder: str) -> Path:
    """Where runs of `experiment_folder` (e.g. table4-paper) that a GPU lease ran out on are kept, apart."""
    return results / f"{experiment_folder}-partial"


def default_into(run_dir: Path) -> Path:
    """results/<experiment>-<scale> for a run of `ibrar reproduce` (runs/<experiment>-<scale>/<run>)."""
    parent = run_dir.resolve().parent.name
    if parent in ("", "runs", RESULTS_DIR):
        raise ReportError(f"--into: {run_dir} is not inside an experiment folder (runs/<experiment>-<scale>/); "
                          "name the results folder, e.g. --into results/quickstart")
    return Path(RESULTS_DIR) / parent


def collect_run(run_dir: str | Path, into: str | Path | None = None) -> Path:
    """Copy the small artifacts of a finished run to `into/<run name>/` (replacing an earlier copy)."""
    run_dir = Path(run_dir)
    if run_dir.suffix == ".pt" or run_dir.is_file():
        raise ReportError(f"RUN_DIR: {run_dir} is a file; give the run folder (checkpoints are never collected)")
    if not run_dir.is_dir():
        raise ReportError(f"RUN_DIR: {run_dir} does not exist")
    for required in ("config.yaml", "meta.json", "metrics.jsonl", "eval.json"):
        if not (run_dir / required).is_file():
            hint = f"; evaluate it first: ibrar eval {run_dir}" if required == "eval.json" else ""
            raise ReportError(f"RUN_DIR: {run_dir} has no {required}, so it is not a finished run{hint}")
    target = Path(into) if into is not None else default_into(run_dir)
    target = target / run_dir.resolve().name
    if target.resolve() == run_dir.resolve():
        raise ReportError(f"--into: {target} is the run folder itself; choose a folder under {RESULTS_DIR}/")
    if target.is_dir():
        strays = sorted(p.name for p in target.iterdir() if p.name not in (*ARTIFACTS, *FIGURE_INPUTS))
        if strays:
            raise ReportError(f"--into: {target} holds other files ({', '.join(strays)}); it is not a results "
                              "copy of a run, so it is left alone")
        shutil.rmtree(target)
    target.mkdir(parents=True)
    copy_artifacts(run_dir, target)
    return target


def copy_artifacts(run_dir: Path, target: Path) -> None:
    """Copy the run's artifacts that exist into `target` (an existing folder); an optional one only when small."""
    for name in (*ARTIFACTS, *FIGURE_INPUTS):
        source = run_dir / name
        if source.is_file() and (name in ("config.yaml", "meta.json", "metrics.jsonl", "eval.json")
                                 or source.stat().st_size <= OPTIONAL_SIZE_LIMIT):
            shutil.copyfile(source, target / name)


# ---- reading the artifacts --------------------------------------------------------------------------


def has_eval(run_dir: Path) -> bool:
    return (run_dir / "eval.json").is_file()


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def machine_of(meta: dict[str, Any]) -> str:
    """The hardware a run used, in words, from meta.json (the same fields for training and evaluation)."""
    if not meta:
        return "machine not recorded"
    threads = meta.get("torch_threads")
    thread_text = f"{threads} torch thread{'s' if threads != 1 else ''}" if threads is not None else "threads ?"
    cores = f" ({meta['cpu_count']} cores)" if meta.get("cpu_count") else ""
    gpu = meta.get("gpu") or "no GPU"
    return f"{meta.get('processor') or '?'}{cores}, {thread_text}, {gpu}"


def training_legs(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """A run's first start and each resumption (`ibrar train --resume` appends them to meta.json)."""
    return [meta, *meta.get("resumed", [])]


def _commits(metas: Sequence[dict[str, Any]]) -> str:
    found = sorted({m["git_commit"][:7] for m in metas if m.get("git_commit")})
    missing = any(not m.get("git_commit") for m in metas)
    if not found:
        return "commit not recorded"
    text = ("commit " if len(found) == 1 else "commits ") + ", ".join(f"`{c}`" for c in found)
    return text + (" (some runs record none)" if missing else "")


def _dates(metas: Sequence[dict[str, Any]]) -> str:
    days = sorted({str(m["started"])[:10] for m in metas if m.get("started")})
    if not days:
        return "date not recorded"
    return days[0] if len(days) == 1 else f"{days[0]} to {days[-1]}"


def _distinct(values: Sequence[str]) -> str:
    return "; ".join(dict.fromkeys(values))


def _seeds(values: Sequence[object]) -> str:
    """`seed 0`, or `seeds 0 and 1` where runs of several training seeds were each evaluated with their own."""
    distinct = sorted({str(v) for v in values}, key=lambda v: (not v.isdigit(), int(v) if v.isdigit() else 0, v))
    if len(distinct) == 1:
        return f"seed {distinct[0]}"
    return f"seeds {', '.join(distinct[:-1])} and {distinct[-1]}, each run its own"


def _minutes(values: Sequence[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f} min"
    if len(values) == 2:
        return f"{values[0]:.1f} and {values[1]:.1f} min"
    low, high = f"{min(values):.1f}", f"{max(values):.1f}"
    return f"{low} min per run" if low == high else f"{low}–{high} min per run"


def source_line(run_dirs: Sequence[Path], root: Path) -> str:
    """Where a table's numbers come from: folder, dates, machines, commits, minutes, test examples."""
    run_dirs = [d for d in run_dirs if has_eval(d)]
    folders = sorted({d.parent for d in run_dirs})
    where = ", ".join(f"`{_relative(f, root)}/`" for f in folders)
    names = ", ".join(f"`{d.name}`" for d in run_dirs) if len(run_dirs) <= 2 else f"{len(run_dirs)} runs"
    metas = [leg for d in run_dirs for leg in training_legs(_read_json(d / "meta.json"))]
    evals = [read_eval(d) for d in run_dirs]
    epochs = sorted({len(read_metrics(d)) for d in run_dirs})
    train_minutes = [sum(float(r.get("seconds", 0.0)) for r in read_metrics(d)) / 60 for d in run_dirs]
    # the whole evaluation where eval.json records it (the attack-steps curves and masking checks included)
    eval_minutes = [float(e.get("total_seconds", e.get("seconds", 0.0))) / 60 for e in evals]
    epoch_text = " or ".join(str(e) for e in epochs)
    parts = [
        f"Source: {names} in {where} (generated by `ibrar report`).",
        f"Trained {_dates(metas)} at {_commits(metas)} on {_distinct([machine_of(m) for m in metas])}: "
        f"{epoch_text} epoch{'' if epochs == [1] else 's'}, {_minutes(train_minutes)}.",
    ]
    eval_metas = [e["meta"] for e in evals if isinstance(e.get("meta"), dict)]
    evaluated = "Evaluated"  # eval.json records when, where and at which commit (an older one may not)
    if len(eval_metas) == len(evals):
        evaluated += (f" {_dates(eval_metas)} at {_commits(eval_metas)} on "
                      f"{_distinct([machine_of(m) for m in eval_metas])}")
    seeds_by_size: dict[int, list[object]] = {}
    for e in evals:
        if "n" in e:
            seeds_by_size.setdefault(int(e["n"]), []).append(e.get("seed", 0))
    sizes = "; ".join(f"{n:,} test images ({_seeds(seeds)})" for n, seeds in seeds_by_size.items())
    parts.append(f"{evaluated}: {sizes}, {_minutes(eval_minutes)}.")
    return " ".join(parts)


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def not_run(what: str, folders: Sequence[Path], root: Path) -> str:
    where = " or ".join(f"`{_relative(f, root)}/`" for f in folders)
    return f"{what}: not run (no eval.json in {where})."


def linf_case(result: dict[str, Any]) -> tuple[list[str], float | None] | None:
    """The attacks that eval.json says entered its L-infinity worst case, and that case's eps (None: it does
    not say, as in an eval.json written before threat models were separated).

    `worst_cases` lists one entry per threat model ({"norm": "Linf", "eps": ..., "attacks": [...]}, the
    L-infinity one at the evaluation's eps first); a mapping from a threat-model name to its entry is read too.
    """
    cases = result.get("worst_cases")
    if isinstance(cases, dict):
        entries = list(cases.items())
    elif isinstance(cases, list):
        entries = [(None, c) for c in cases]
    else:
        return None
    for key, entry in entries:
        labels = [key] if key is not None else []
        if isinstance(entry, dict):
            labels += [entry.get(k) for k in ("norm", "threat_model", "name")]
        if not any(isinstance(label, str) and "inf" in label.lower() for label in labels):
            continue
        attacks = entry if isinstance(entry, list) else entry.get("attacks") if isinstance(entry, dict) else None
        eps = entry.get("eps") if isinstance(entry, dict) else None
        if attacks is not None:
            return [str(a) for a in attacks], (float(eps) if isinstance(eps, (int, float)) else None)
    return None


def linf_worst_case(run_dir: Path) -> float | None:
    """eval.json's worst case, in %, only when eval.json declares it to be over L-infinity attacks alone."""
    result = read_eval(run_dir)
    return eval_metric(result, "worst_case") if linf_case(result) is not None else None


def eps_text(eps: float | None) -> str:
    """8/255 for 0.0313..., else the number."""
    if eps is None:
        return "the evaluation's ε"
    steps = eps * 255
    return f"ε = {round(steps)}/255" if abs(steps - round(steps)) < 1e-6 else f"ε = {eps:g}"


def evaluation_notes(dirs: Sequence[Path]) -> list[str]:
    """Which AutoAttack the runs' AutoAttack column holds (eval.json's `autoattack` block names the reference and
    its parameters), and what the reference's own checks and ibrar's gradient-masking checks warned."""
    used: dict[tuple[str, str], list[object]] = {}  # each setting (text before and after its seed), its seeds
    own: list[str] = []
    warned: dict[tuple[str, str], list[str]] = {}
    for d in dirs:
        result = read_eval(d)
        for text in result.get("warnings") or []:
            warned.setdefault(("ibrar's gradient-masking checks", str(text)), []).append(f"`{d.name}`")
        if eval_metric(result, "autoattack") is None:
            continue
        block = result.get("autoattack")
        if not isinstance(block, dict) or not block.get("implementation"):
            own.append(f"`{d.name}`")
            continue
        budget = "" if block.get("standard_budget", True) else f", reduced budget {block.get('budget')}"
        setting = (f"`{block['implementation']}` {block.get('package_version', '?')} ({block.get('version', '?')} "
                   f"version, ", f", {block.get('n_target_classes', '?')} target classes{budget})")
        used.setdefault(setting, []).append(block.get("seed", "?"))
        for text in block.get("warnings") or []:
            warned.setdefault(("AutoAttack's own checks", str(text)), []).append(f"`{d.name}`")
    parts = []
    if used:
        settings = [f"{before}{_seeds(seeds)}{after}" for (before, after), seeds in used.items()]
        parts.append(f"AutoAttack is the reference implementation: {'; '.join(settings)}.")
    if own:
        parts.append(f"AutoAttack of {', '.join(own)}: from an eval.json without the reference's `autoattack` "
                     "block (ibrar's own re-implementation, evaluated before the reference), not the reference.")
    for (source, text), runs in warned.items():
        parts.append(f"Warning of {source} ({', '.join(runs)}): {text.rstrip('.')}.")
    return [" ".join(parts), ""] if parts else []


# ---- formatting -------------------------------------------------------------------------------------


def _signed(value: float, digits: int) -> str:
    text = f"{abs(value):.{digits}f}"
    if float(text) == 0:
        return text
    return ("+" if value > 0 else "−") + text


def _measured(cell: Any, digits: int, ran: bool = True) -> str:
    """Mean (± std over seeds); 'not run' when the row has no evaluated run, '-' when it lacks this attack."""
    if cell.mean is None:
        return "-" if ran else "not run"
    if cell.std is None:
        return f"{cell.mean:.{digits}f}"
    return f"{cell.mean:.{digits}f} ± {cell.std:.{digits}f}"


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


# ---- tables of single runs (the README's quickstart pair, the CE baseline) --------------------------

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
    return "\n".join([*_markdown_table(header, body), "", source_line(done, root)])


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


# ---- the paper's tables, beside the paper's numbers -------------------------------------------------


def _experiment(name: str, scale: str, folder: Path) -> Any:
    """The experiment's run list, with as many seeds as the collected folders hold (`<run>-seed<k>`): of the
    build with one seed and the one with max(k) + 1, the one whose run names match more collected folders (the
    scale study trains its cheap points with two seeds and the others with one), and any `<run>-seed<k>` beside
    a `<run>` of one seed."""
    from ibrar.experiments import build_experiment

    collected = {d.name for d in folder.iterdir() if d.is_dir()} if folder.is_dir() else set()
    seeds = [int(m.group(1)) for name_ in collected if (m := re.search(r"-seed(\d+)$", name_))]
    builds = [build_experiment(name, scale, seeds=s) for s in sorted({1, max(seeds, default=0) + 1})]
    chosen = max(builds, key=lambda e: len(collected & {r.name for r in e.runs}))
    # seeds added later beside a seed-0 run without suffix (`<run>`, then `<run>-seed1`, ...) join its row
    chosen.runs = [replace(r, name=r.group) if r.name == f"{r.group}-seed0" and r.name not in collected
                   and r.group in collected else r for r in chosen.runs]
    chosen.runs += [replace(r, name=n, seed=int(m.group(1))) for r in list(chosen.runs) if r.name == r.group
                    for n in sorted(collected - {s.name for s in chosen.runs})
                    if (m := re.fullmatch(rf"{re.escape(r.group)}-seed([1-9]\d*)", n))]
    return chosen


def _group_dirs(experiment: Any, folder: Path, groups: Sequence[str]) -> list[Path]:
    return [folder / spec.name for group in groups for spec in experiment.runs_of(group)
            if has_eval(folder / spec.name)]


_HEADER = {"PGD": "PGD-10", "CW": "CW-L2", "NIFGSM": "NI-FGSM", "Worst case": "L∞ worst case"}


def table1_tables(results: Path, root: Path, scale: str = "cpu") -> str:
    """Table 1 per method pair (without / with IB-RAR), ours beside the paper's, with each pair's source."""
    from ibrar.experiments import table1
    from ibrar.experiments.paper_numbers import TABLE1
    from ibrar.experiments.results import Cell, eval_table, group_values

    folder = results / f"table1-{scale}"
    experiment = _experiment("table1", scale, folder)
    attack_columns = [c for c in table1.COLUMNS if c[1] != "worst_case"]
    labels = [label for label, _ in table1.COLUMNS]
    header = ["method", *[_HEADER.get(label, label) for label in labels]]
    out: list[str] = []
    worst_lists: dict[str, None] = {}
    for block_title, block_rows in experiment.info["rows"]:
        for (base_label, base), (ib_label, ib) in zip(block_rows[::2], block_rows[1::2], strict=True):
            title = f"**{base_label}, {block_title}**"
            dirs = _group_dirs(experiment, folder, (base, ib))
            if not dirs:
                out += [not_run(title, [folder / base, folder / ib], root), ""]
                continue
            table = eval_table(experiment, folder, title, [(base_label, base), (ib_label, ib)], attack_columns, TABLE1)
            for row in table.rows:
                row.cells["Worst case"] = Cell(group_values(experiment, folder, row.group, linf_worst_case))
            ours = [[f"{row.label} (ours, {scale})",
                     *[_measured(row.cells[c], 2, bool(_group_dirs(experiment, folder, [row.group])))
                       for c in labels]] for row in table.rows]
            paper = [[f"{row.label} (paper)", *["-" if row.cells[c].paper is None else f"{row.cells[c].paper:.2f}"
                                                for c in labels]] for row in table.rows]
            out += [title, "", *_markdown_table(header, [
                *ours, ["difference", *_differences([r.cells for r in table.rows], labels, "mean")],
                *paper, ["difference (paper)", *_differences([r.cells for r in table.rows], labels, "paper")],
            ]), "", *_median_l2_line(dirs, experiment.scale.attack("cw")), *evaluation_notes(dirs),
                source_line(dirs, root), ""]
            worst_lists.update(_linf_lists(dirs))
    listed = [w for w in worst_lists if w]
    note = ("CW-L2 is an L2 attack (unbounded in L∞) and is reported in its own column; it never enters the L∞ "
            "worst case, which is the per-example worst over the L∞ attacks at the evaluation's ε that eval.json "
            "lists under `worst_cases`")
    note += f" ({'; '.join(listed)})." if listed else "."
    if "" in worst_lists:
        note += " An eval.json without `worst_cases` (written before threat models were separated) shows no L∞ " \
                "worst case."
    return "\n".join([*out, note])


def _linf_lists(dirs: Sequence[Path]) -> dict[str, None]:
    """'ε = 8/255: fgsm, pgd10, ...' per distinct L-infinity worst case of the runs ('' for an eval.json that
    lists none), in order."""
    lists: dict[str, None] = {}
    for d in dirs:
        case = linf_case(read_eval(d))
        lists[f"{eps_text(case[1])}: {', '.join(case[0])}" if case is not None else ""] = None
    return lists


def _median_l2_line(dirs: Sequence[Path], attack: str) -> list[str]:
    """The median L2 size of the L2 attack's successful perturbations per run, when eval.json records it."""
    sizes = []
    for d in dirs:
        found = [a.get("median_l2") for a in read_eval(d).get("attacks", []) if a.get("name") == attack]
        if found and isinstance(found[0], (int, float)):
            sizes.append(f"`{d.name}` {found[0]:.3f}")
    if not sizes:
        return []
    return [f"Median L2 size of the successful CW-L2 perturbations: {', '.join(sizes)}.", ""]


def _differences(rows: Sequence[dict[str, Any]], labels: Sequence[str], which: str) -> list[str]:
    """With IB-RAR minus without, per column ('-' where either side is missing)."""
    cells = []
    for label in labels:
        base, ib = (getattr(r[label], which) for r in rows)
        cells.append("-" if base is None or ib is None else _signed(ib - base, 2))
    return cells


_TABLE4_COLUMNS = ("Natural", "PGD", "NIFGSM", "FGSM", "AutoAttack")


def table4_table(results: Path, root: Path, scale: str = "cpu") -> str:
    """Table 4's rows with VGG16 and ResNet18 side by side, each beside the paper's."""
    from ibrar.experiments import table4
    from ibrar.experiments.paper_numbers import TABLE4
    from ibrar.experiments.results import eval_table

    folder = results / f"table4-{scale}"
    experiment = _experiment("table4", scale, folder)
    groups = [f"{model}-{row}" for model, _ in table4.MODELS for row, _ in table4.ROWS]
    dirs = _group_dirs(experiment, folder, groups)
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
            if _group_dirs(experiment, folder, [row.group]):
                line.append(" / ".join(_measured(row.cells[c], 1) for c in _TABLE4_COLUMNS))
            else:
                line.append("not run")
            cells = row.cells
            paper = [cells[c].paper for c in _TABLE4_COLUMNS[:-1]]
            line.append(" / ".join("-" if p is None else f"{p:.2f}" for p in paper))
        body.append(line)
    return "\n".join([*_markdown_table(header, body), "", *evaluation_notes(dirs),
                      "AA = AutoAttack. " + source_line(dirs, root)])


def _ran(experiment: Any, folder: Path, group: str) -> int:
    return len(_group_dirs(experiment, folder, [group]))


def _cells(cells: dict[str, Any], columns: Sequence[str], ran: bool, digits: int = 1) -> list[str]:
    return [_measured(cells[c], digits, ran) for c in columns]


def _paper_rows(rows: Sequence[Any], columns: Sequence[str], label: Callable[[Any], str]) -> list[list[str]]:
    """The paper's value per column of each row (a row per distinct label), when the paper gives any."""
    out: dict[str, list[str]] = {}
    for row in rows:
        values = [row.cells[c].paper for c in columns]
        if any(v is not None for v in values):
            out.setdefault(label(row), ["-" if v is None else f"{v:.2f}" for v in values])
    return [[name, *values] for name, values in out.items()]


def scale_tables(results: Path, root: Path, scale: str = "cpu") -> str:
    """The scale study: a table per axis (width, training length) of Table 4's rows (1), (2), (6) on VGG16,
    mean ± std over the seeds that ran, with the paper's Table 4 values at its full setting below."""
    from ibrar.experiments import scale as study

    folder = results / f"scale-{scale}"
    experiment = _experiment("scale", scale, folder)
    tables, _ = study.study_tables(experiment, folder)
    if not _group_dirs(experiment, folder, [row.group for table in tables for row in table.rows]):
        return not_run("Scale study", [folder], root)
    columns = [label for label, _ in study.COLUMNS]
    header = ["row, setting", "seeds", *[_HEADER.get(c, c) for c in columns]]
    out: list[str] = []
    for table in tables:
        title = f"**{table.title}**"
        dirs = _group_dirs(experiment, folder, [row.group for row in table.rows])
        if not dirs:
            runs = [folder / spec.name for row in table.rows for spec in experiment.runs_of(row.group)]
            out += [not_run(title, runs, root), ""]
            continue
        body = []
        for row in table.rows:
            ran, planned = _ran(experiment, folder, row.group), len(experiment.runs_of(row.group))
            seeds = str(ran) if ran == planned else f"{ran} of {planned}"
            body.append([row.label, seeds, *_cells(row.cells, columns, ran > 0)])
        paper = _paper_rows(table.rows, columns,
                            lambda row: f"{row.label.split(', ')[0]}, paper (width 1, 50,000 images, 60 epochs)")
        body += [[label, "-", *values] for label, *values in paper]
        out += [title, "", *_markdown_table(header, body), "", *evaluation_notes(dirs), source_line(dirs, root), ""]
        labelled = [(row.label if len(experiment.runs_of(row.group)) == 1 else f"{row.label}, `{d.name}`", d)
                    for row in table.rows for d in _group_dirs(experiment, folder, [row.group])]
        out += attack_strength_tables(labelled)
    out.append("Each cell of ours: the mean over the seeds that ran (± their standard deviation where two ran); "
               "the paper's rows are its Table 4 values at its full setting. Width 0.25 with 10,000 images and 10 "
               "epochs is Table 4's cpu-scale setting.")
    return "\n".join(out)


_STAGES = (("clean", "Natural"), ("apgd-ce", "APGD-CE"), ("apgd-t", "APGD-T"), ("fab-t", "FAB-T"),
           ("square", "Square"))


def attack_strength_tables(labelled: Sequence[tuple[str, Path]]) -> list[str]:
    """For the runs whose eval.json holds attack-steps curves: accuracy by number of steps of each attack family,
    then the accuracy left after each stage of the reference AutoAttack. Where a 10-step attack and AutoAttack
    disagree, these say what closes the gap: more steps of the same attack, or AutoAttack's other losses."""
    runs = [(label, result) for label, result in ((label, read_eval(d)) for label, d in labelled)
            if result.get("curves")]
    if not runs:
        return []
    steps = sorted({int(s) for _, result in runs for curve in result["curves"].values() for s in curve})
    body = [[label, _family_label(family), *[_percent(curve.get(str(s))) for s in steps]]
            for label, result in runs for family, curve in result["curves"].items()]
    eps = {result.get("eps") for _, result in runs}
    radius = eps_text(eps.pop() if len(eps) == 1 else None)
    out = [f"Accuracy by number of attack steps (the same evaluations; PGD and NI-FGSM at {radius}, CW-L2 "
           "unbounded):", "",
           *_markdown_table(["run", "attack", *[f"{s} steps" if s != 1 else "1 step" for s in steps]], body), ""]
    staged = [(label, result["autoattack"]["stages"]) for label, result in runs
              if isinstance(result.get("autoattack"), dict) and result["autoattack"].get("stages")]
    if staged:
        out += ["Accuracy left after each stage of the reference AutoAttack (each stage attacks only the examples "
                "the stages before it left correctly classified):", "",
                *_markdown_table(["run", *[name for _, name in _STAGES]],
                                 [[label, *[_percent(stages.get(key)) for key, _ in _STAGES]]
                                  for label, stages in staged]), ""]
    return out


def _percent(fraction: Any) -> str:
    return "-" if fraction is None else f"{100 * fraction:.1f}"


def table6_table(results: Path, root: Path, scale: str = "cpu") -> str:
    """Table 6, the adaptive attack PGD_AD against plain CE, plain IB-RAR and PGD-AT + IB-RAR networks."""
    from ibrar.experiments import table6
    from ibrar.experiments.results import Cell, group_values

    folder = results / f"table6-{scale}"
    experiment = _experiment("table6", scale, folder)
    dirs = _group_dirs(experiment, folder, [group for group, _, _ in table6.NETWORKS])
    if not dirs:
        return not_run("Table 6", [folder], root)
    table = table6.adaptive_table(experiment, folder)
    for row in table.rows:  # the worst case over the L-inf attacks only, as eval.json declares it
        row.cells["Worst case"] = Cell(group_values(experiment, folder, row.group, linf_worst_case))
    columns = [label for label, _ in table6.COLUMNS]
    body = [[f"{row.label} (ours, {scale})", *_cells(row.cells, columns, _ran(experiment, folder, row.group) > 0)]
            for row in table.rows]
    paper = _paper_rows(table.rows, columns, lambda row: f"{row.label} (paper)")
    body += paper
    listed = [w for w in _linf_lists(dirs) if w]
    note = "" if paper else ("The paper's Table 6 is an image in our copy of the paper: it has no numbers to show "
                             "here, only the findings its text states. ")
    note += "The L∞ worst case is the per-example worst over the L∞ attacks that eval.json lists under `worst_cases`"
    note += f" ({'; '.join(listed)})." if listed else " (an eval.json without `worst_cases` shows none)."
    return "\n".join([*_markdown_table(["network", *[_HEADER.get(c, c) for c in columns]], body), "", note, "",
                      *evaluation_notes(dirs), source_line(dirs, root)])


_FAMILY = {"CW": "CW-L2", "NIFGSM": "NI-FGSM"}


def _family_label(family: str) -> str:
    """An attack-steps curve's name in the tables (eval.json's `pgd`, `cw`, `nifgsm`: PGD, CW-L2, NI-FGSM)."""
    from ibrar.experiments import fig2

    label = dict(fig2.FAMILIES).get(family, family)
    return _FAMILY.get(label, label)


def fig2_tables(results: Path, root: Path, scale: str = "cpu") -> str:
    """Figure 2's networks under PGD-10, CW-L2, NI-FGSM and AutoAttack (clean beside the paper's), then the
    attack-steps curves as one table per attack family."""
    from ibrar.experiments import fig2

    folder = results / f"fig2-{scale}"
    experiment = _experiment("fig2", scale, folder)
    dirs = _group_dirs(experiment, folder, [group for _, group in fig2.ROWS])
    if not dirs:
        return not_run("Figure 2", [folder], root)
    main, *curves = fig2.network_tables(experiment, folder)
    columns = [label for label, _ in fig2.COLUMNS]
    header = ["network", "Natural", "paper Natural", *[_HEADER.get(c, c) for c in columns[1:]]]
    body = []
    for row in main.rows:
        ran = _ran(experiment, folder, row.group) > 0
        natural = row.cells["Natural"]
        body.append([row.label, _measured(natural, 1, ran), "-" if natural.paper is None else f"{natural.paper:.2f}",
                     *_cells(row.cells, columns[1:], ran)])
    out = [*_markdown_table(header, body), "", *_median_l2_line(dirs, experiment.scale.attack("cw")),
           *evaluation_notes(dirs), source_line(dirs, root), ""]
    curve_dirs = [d for d in dirs if read_eval(d).get("curves")]
    if not curve_dirs:
        return "\n".join([*out, f"Attack-steps curves: not run (no eval.json in `{_relative(folder, root)}/` "
                                 "holds `curves`)."])
    for (family, _), table in zip(fig2.FAMILIES, curves, strict=True):
        rows = [[row.label, *_cells(row.cells, table.columns, _ran(experiment, folder, row.group) > 0)]
                for row in table.rows]
        out += [f"**{_family_label(family)}: accuracy by number of attack steps**", "",
                *_markdown_table(["network", *[f"{s} steps" if s != "1" else "1 step" for s in table.columns]],
                                 rows), ""]
    out.append(source_line(curve_dirs, root))
    return "\n".join(out)


def table3_table(results: Path, root: Path, scale: str = "cpu") -> str:
    """Table 3: one network per IB layer, all layers, the robust layers and CE only, and the layers that the
    selection procedure (ibrar.experiments.table3.robust_layers) names from these runs."""
    from ibrar.experiments import table3
    from ibrar.experiments.paper_numbers import TABLE3_ROBUST_LAYERS

    folder = results / f"table3-{scale}"
    experiment = _experiment("table3", scale, folder)
    dirs = _group_dirs(experiment, folder, [group for _, group in experiment.info["rows"]])
    if not dirs:
        return not_run("Table 3", [folder], root)
    table = table3.layer_table(experiment, folder)
    found, reference = table3.robust_layers(table)
    columns = [label for label, _ in table3.COLUMNS]
    header = ["network", *[_HEADER.get(c, c) for c in columns], "PGD-10 − CE only"]
    body = []
    for row in table.rows:
        pgd = row.cells["PGD"].mean
        gain = "-" if row.group == "ce" or None in (pgd, reference) else _signed(pgd - reference, 1)
        body.append([row.label, *_cells(row.cells, columns, _ran(experiment, folder, row.group) > 0), gain])
    margin = f"{table3.MARGIN_PP:g}"
    layers = list(experiment.info["layers"])
    evaluated = [layer for layer in layers if _ran(experiment, folder, f"layer-{layer}")]
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
    return "\n".join([*_markdown_table(header, body), "", named, "", *evaluation_notes(dirs),
                      source_line(dirs, root)])


# ---- benchmarks -------------------------------------------------------------------------------------

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
                  f"(torch {s['torch']}, {commit}; `{_relative(path, root)}`).", ""]
        if s.get("note"):
            lines += [s["note"], ""]
        lines += ["```", s["output"].rstrip("\n"), "```", ""]
    return "\n".join(lines).rstrip("\n")


def gpu_check_section(results: Path, root: Path) -> str:
    """The GPU kit's `check` stage (CUDA tests and the fast-path timings), as it came back from the device."""
    folder = results / "gpu-check"
    report_md, stage_json = folder / "check.md", folder / "stage.json"
    if not report_md.is_file():
        return f"The GPU check: not run yet (no check.md in `{_relative(folder, root)}/`)."
    stage = _read_json(stage_json) if stage_json.is_file() else {}
    where = ", ".join(str(stage[k]) for k in ("device", "torch") if stage.get(k)) or "device not recorded"
    when = stage.get("started_utc", "date not recorded")
    minutes = f"{stage['minutes']} minutes" if stage.get("minutes") is not None else "minutes not recorded"
    lines = [f"`bash bench/gpu/run.sh check` on {where}, started {when}, {minutes} "
             f"(`{_relative(folder, root)}`).", "", report_md.read_text().rstrip("\n")]
    earlier = sorted((folder / "history").glob("*-check.json"))
    if earlier:
        lines += ["", "Earlier checks (`history/`; the commits that follow each say what was fixed):", ""]
        for path in earlier:
            check = _read_json(path)
            tests = check.get("cuda_tests", {})
            stage = folder / "history" / path.name.replace("-check.json", "-stage.json")
            started = _read_json(stage).get("started_utc", path.name[:17]) if stage.is_file() else path.name[:17]
            failed = "; ".join(name.split(":")[0] for name in tests.get("failed", [])) or "none"
            lines.append(f"- {started} on {check.get('device', 'device not recorded')}: {tests.get('passed', 0)} "
                         f"passed, {tests.get('failures', 0)} failed ({failed})")
    bench = folder / "fast-path.json"
    if bench.is_file():
        record = _read_json(bench)
        lines += ["", f"`{record['command']}` on {record['device']} (torch {record['torch']}), started "
                  f"{record['started_utc']}: {record['note']}.", "", "```", record["output"].rstrip("\n"), "```"]
    return "\n".join(lines)


def table4_paper_table(results: Path, root: Path) -> str:
    """Table 4 at the paper's scale, as the GPU kit's `table4-<row>` stages bring it back, and below it the
    rows a lease ran out on before they were trained."""
    partial = table4_paper_partial(results, root)
    return table4_table(results, root, "paper") + ("\n\n" + partial if partial else "")


def table4_paper_partial(results: Path, root: Path) -> str:
    """Paper-scale rows a lease ran out on (the GPU went back first; its disk, checkpoint included, with it): how
    far they trained, the Trainer's per-epoch monitor, and the paper's attacks on the whole test set when that
    piece of the evaluation ran (eval-full.json). AutoAttack did not run, so these are not Table 4's rows."""
    from ibrar.experiments.paper_numbers import TABLE4, TABLE4_COLUMNS
    from ibrar.run_folder import read_run_config

    folder = partial_folder(results, "table4-paper")
    runs = sorted(p for p in folder.glob("*") if (p / "metrics.jsonl").is_file() and (p / "gpu.json").is_file()
                  and not (results / "table4-paper" / p.name / "eval.json").is_file())
    rows, calls, recovered = [], [], []
    for run in runs:
        metrics, gpu = read_metrics(run), _read_json(run / "gpu.json")
        last, per_epoch = metrics[-1], sorted(m["seconds"] for m in metrics if "seconds" in m)
        full = _read_json(run / PARTIAL_EVAL)
        if full:
            measured = " / ".join("-" if (value := eval_metric(full, k)) is None else f"{value:.1f}"
                                  for k in ("clean", "pgd10", "nifgsm", "fgsm"))
            if full.get("recovered_from"):
                recovered.append(f"{run.name}'s whole-test-set numbers come from its {full['recovered_from']}")
        else:
            measured = "not evaluated"
        paper = TABLE4.get(run.name, {})
        rows.append([run.name, f"{last['epoch']} of {read_run_config(run).train.epochs}",
                     f"{100 * last['test_clean_acc']:.1f}", f"{100 * last['test_pgd10_acc']:.1f}",
                     f"{per_epoch[len(per_epoch) // 2]:.1f}", measured,
                     " / ".join(f"{paper[c]:.2f}" for c in TABLE4_COLUMNS) if paper else "-",
                     gpu.get("device", "not recorded")])
        source = gpu.get("source") or {}
        commit = f"commit `{str(source.get('commit', ''))[:7]}`" if source.get("commit") else "commit not recorded"
        dirty = " with uncommitted changes" if source.get("uncommitted_changes") else ""
        calls += [f"{run.name}: {c['started_utc']}, {c['minutes']} min, torch {c['torch']}, {commit}{dirty}"
                  for c in gpu.get("calls", [])]
    if not rows:
        return ""
    header = ["run (not finished)", "epochs trained", "clean % (monitor)", "PGD-10 % (monitor)", "median s/epoch",
              "whole test set: Natural / PGD-10 / NI-FGSM / FGSM", "paper (Nat / PGD / NI / FGSM)", "device"]
    notes = [f"{'; '.join(recovered)}.", ""] if recovered else []
    return "\n".join([
        "Not finished when the lease ended, so not Table 4's rows: trained part of the way, or trained and evaluated "
        "with the paper's attacks on the whole test set but not yet with AutoAttack (the monitor: clean and PGD-10 "
        f"accuracy on the first `train.eval_subset` test images after the last epoch; `{_relative(folder, root)}/`):",
        "", *_markdown_table(header, rows), "", *notes, "GPU calls: " + "; ".join(calls) + "."])


# ---- the docs ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DocTable:
    """A generated table: its marker name, the doc (relative to the repository root) and its renderer."""

    name: str
    doc: str
    render: Callable[[Path, Path], str]  # (results folder, repository root) -> markdown


TABLES: tuple[DocTable, ...] = (
    DocTable("quickstart", "README.md", quickstart_table),
    DocTable("claims", "docs/reproduction.md", claims_section),
    DocTable("table1-cpu", "docs/reproduction.md", table1_tables),
    DocTable("table4-cpu", "docs/reproduction.md", table4_table),
    DocTable("table4-paper", "docs/reproduction.md", table4_paper_table),
    DocTable("table3-cpu", "docs/reproduction.md", table3_table),
    DocTable("table6-cpu", "docs/reproduction.md", table6_table),
    DocTable("fig2-cpu", "docs/reproduction.md", fig2_tables),
    DocTable("scale-cpu", "docs/reproduction.md", scale_tables),
    DocTable("ce-fast", "docs/reproduction.md", ce_fast_table),
    DocTable("bench", "bench/RESULTS.md", bench_sections),
    DocTable("gpu-check", "bench/RESULTS.md", gpu_check_section),
)


def _tables_by_doc(only: Sequence[str] | None) -> dict[str, dict[str, DocTable]]:
    known = {t.name for t in TABLES}
    unknown = sorted(set(only or ()) - known)
    if unknown:
        raise ReportError(f"only: unknown tables {unknown}; the generated tables are {sorted(known)}")
    docs: dict[str, dict[str, DocTable]] = {}
    for table in TABLES:
        if only is None or table.name in only:
            docs.setdefault(table.doc, {})[table.name] = table
    return docs


def render_docs(root: str | Path = ".", results: str | Path | None = None,
                only: Sequence[str] | None = None) -> dict[Path, tuple[str, str, list[str]]]:
    """Each doc's (current text, regenerated text, names of tables whose text changed)."""
    root = Path(root)
    results = Path(results) if results is not None else root / RESULTS_DIR
    out = {}
    for doc, tables in _tables_by_doc(only).items():
        path = root / doc
        if not path.is_file():
            raise ReportError(f"root: {path} does not exist; run `ibrar report` in the ibrar checkout (or --root)")
        text = path.read_text()
        found = [m.group("name") for m in MARKER.finditer(text)]
        every = {t.name for t in TABLES if t.doc == doc}
        stray = sorted(set(found) - every)
        if stray:
            raise ReportError(f"{doc}: unknown report markers {stray}; known here: {sorted(every)}")
        for name in tables:
            if found.count(name) != 1:
                raise ReportError(f"{doc}: expected one '<!-- report:{name} -->' ... '<!-- /report -->' block, "
                                  f"found {found.count(name)}")
        changed: list[str] = []

        def replace(match: re.Match[str], tables: dict[str, DocTable] = tables, changed: list[str] = changed) -> str:
            table = tables.get(match.group("name"))
            if table is None:
                return match.group(0)
            body = table.render(results, root).rstrip("\n") + "\n"
            if body != match.group("body"):
                changed.append(table.name)
            return match.group(1) + body + match.group(4)

        out[path] = (text, MARKER.sub(replace, text), changed)
    return out


def write_docs(root: str | Path = ".", results: str | Path | None = None,
               only: Sequence[str] | None = None) -> list[Path]:
    """Regenerate the tables in place; returns the docs that changed."""
    written = []
    for path, (old, new, _) in render_docs(root, results, only).items():
        if new != old:
            path.write_text(new)
            written.append(path)
    return written


def check_docs(root: str | Path = ".", results: str | Path | None = None) -> list[str]:
    """One line per table whose text in the docs differs from what the artifacts give (empty: all match)."""
    return [f"{path.relative_to(Path(root)).as_posix()}: table '{name}' differs from {RESULTS_DIR}/; "
            "run `ibrar report` to regenerate it"
            for path, (_, _, changed) in render_docs(root, results).items() for name in changed]


# ---- figures from the artifacts ---------------------------------------------------------------------

FIGURES_DIR = "docs/figures"


class NotDrawn(Exception):
    """A figure whose runs are not (all) in results/: the message says which are missing."""


def _first_runs(experiment: Any, folder: Path, rows: Sequence[tuple[str, str]]) -> list[tuple[str, Path]]:
    """(label, first evaluated seed's folder) of each (label, group) row that has one."""
    found = [(label, _group_dirs(experiment, folder, [group])) for label, group in rows]
    return [(label, dirs[0]) for label, dirs in found if dirs]


def scale_figure(results: Path, root: Path, stem: Path, scale: str = "cpu") -> list[Path]:
    """The scale study's robust accuracy against width and training length, the paper's values marked."""
    from ibrar import plots
    from ibrar.experiments import scale as study

    folder = results / f"scale-{scale}"
    experiment = _experiment("scale", scale, folder)
    tables, series = study.study_tables(experiment, folder)
    if not _group_dirs(experiment, folder, [row.group for table in tables for row in table.rows]):
        raise NotDrawn(f"no eval.json in `{_relative(folder, root)}/`")
    return plots.plot_scale_study(series, stem, paper=study.PAPER)


def fig2_figure(results: Path, root: Path, stem: Path, scale: str = "cpu") -> list[Path]:
    """Figure 2: accuracy against attack steps (eval.json `curves`), first seed of each network."""
    from ibrar import plots
    from ibrar.experiments import fig2

    folder = results / f"fig2-{scale}"
    runs = [(label, d) for label, d in _first_runs(_experiment("fig2", scale, folder), folder, fig2.ROWS)
            if read_eval(d).get("curves")]
    if not runs:
        raise NotDrawn(f"no eval.json in `{_relative(folder, root)}/` holds `curves`")
    return plots.plot_steps([d for _, d in runs], stem, labels=[label for label, _ in runs])


def table1_convergence(results: Path, root: Path, stem: Path, scale: str = "cpu") -> list[Path]:
    """Clean and PGD test accuracy per epoch (metrics.jsonl) of each Table 1 run, first seed."""
    from ibrar import plots

    folder = results / f"table1-{scale}"
    experiment = _experiment("table1", scale, folder)
    rows = [(label if i == 0 else f"{label}, {title}", group)
            for i, (title, block_rows) in enumerate(experiment.info["rows"]) for label, group in block_rows]
    runs = _first_runs(experiment, folder, rows)
    if not runs:
        raise NotDrawn(f"no eval.json in `{_relative(folder, root)}/`")
    return plots.plot_convergence([d for _, d in runs], stem, labels=[label for label, _ in runs])


def table4_infoplane(results: Path, root: Path, stem: Path, scale: str = "cpu") -> list[Path]:
    """Figure 5: the information plane (info_plane.jsonl) of Table 4's VGG16 rows (2) and (1), first seed."""
    from ibrar import plots
    from ibrar.experiments import table4

    folder = results / f"table4-{scale}"
    rows = [(label, group) for group, label in table4.INFOPLANE]
    runs = [(label, d) for label, d in _first_runs(_experiment("table4", scale, folder), folder, rows)
            if (d / "info_plane.jsonl").is_file()]
    if not runs:
        groups = " or ".join(f"`{group}`" for group, _ in table4.INFOPLANE)
        raise NotDrawn(f"no run of {groups} in `{_relative(folder, root)}/` has info_plane.jsonl (a file over "
                       f"{OPTIONAL_SIZE_LIMIT >> 20} MiB is not collected)")
    return plots.plot_infoplane([d for _, d in runs], stem, labels=[label for label, _ in runs])


@dataclass(frozen=True)
class DocFigure:
    """A figure redrawn from results/ alone: its file stem under docs/figures/ and the function that draws it."""

    name: str
    draw: Callable[[Path, Path, Path], list[Path]]  # (results folder, repository root, out stem) -> files


FIGURES: tuple[DocFigure, ...] = (
    DocFigure("scale-cpu-scale-study", scale_figure),
    DocFigure("fig2-cpu-steps", fig2_figure),
    DocFigure("table1-cpu-convergence", table1_convergence),
    DocFigure("table4-cpu-fig5-infoplane", table4_infoplane),
)


def draw_figures(root: str | Path = ".", results: str | Path | None = None) -> dict[str, list[Path] | str]:
    """Redraw each figure into docs/figures/ (PNG and PDF); per figure its files, or why it was not drawn.
    Figures are not checked for drift (their bytes vary with matplotlib); the tables are."""
    root = Path(root)
    results = Path(results) if results is not None else root / RESULTS_DIR
    out: dict[str, list[Path] | str] = {}
    for figure in FIGURES:
        try:
            out[figure.name] = figure.draw(results, root, root / FIGURES_DIR / figure.name)
        except NotDrawn as reason:
            out[figure.name] = str(reason)
    return out
