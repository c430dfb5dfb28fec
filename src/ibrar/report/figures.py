"""The figures under docs/figures/, redrawn from results/ alone (`ibrar report --figures`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ibrar import plots
from ibrar.experiments import fig2, table4
from ibrar.experiments import scale as study
from ibrar.figure_data import load_confusion, load_features
from ibrar.report.collect import OPTIONAL_SIZE_LIMIT, RESULTS_DIR, collected_experiment, group_dirs, relative
from ibrar.run_files import CONFUSION_FILE, FEATURES_FILE
from ibrar.run_folder import RunFolder
from ibrar.run_names import variants

FIGURES_DIR = "docs/figures"


class NotDrawn(Exception):
    """A figure whose runs are not (all) in results/: the message says which are missing."""


def _first_runs(experiment: Any, folder: Path, rows: Sequence[tuple[str, str]]) -> list[tuple[str, Path]]:
    """(label, first evaluated seed's folder) of each (label, group) row that has one."""
    found = [(label, group_dirs(experiment, folder, [group])) for label, group in rows]
    return [(label, dirs[0]) for label, dirs in found if dirs]


def _every_seed(experiment: Any, folder: Path, rows: Sequence[tuple[str, str]]) -> list[tuple[str, Path]]:
    """(label, folder) of every evaluated seed of each (label, group) row, a row's seeds under its label."""
    return [(label, d) for label, group in rows for d in group_dirs(experiment, folder, [group])]


def _each_variant(name: str, scale: str, folder: Path, stem: Path,
                  draw: Callable[[Any, Path], list[Path]]) -> list[Path]:
    """`draw(experiment, stem)` for each variant of the experiment's runs in `folder` (the GPU kit's
    `-authors-optim` beside the paper text's optimizer: one figure each, `<stem><variant>`); NotDrawn with the
    first variant's reason when none could be drawn."""
    files: list[Path] = []
    reasons: list[str] = []
    for variant in variants(name, scale, folder) or [""]:
        try:
            files += draw(collected_experiment(name, scale, folder, variant), Path(f"{stem}{variant}"))
        except NotDrawn as reason:
            reasons.append(str(reason))
    if not files:
        raise NotDrawn(reasons[0])
    return files


def scale_figure(results: Path, root: Path, stem: Path, scale: str = "cpu") -> list[Path]:
    """The scale study's robust accuracy against width and training length, the paper's values marked."""
    folder = results / f"scale-{scale}"
    experiment = collected_experiment("scale", scale, folder)
    tables, series = study.study_tables(experiment, folder)
    if not group_dirs(experiment, folder, [row.group for table in tables for row in table.rows]):
        raise NotDrawn(f"no eval.json in `{relative(folder, root)}/`")
    return plots.plot_scale_study(series, stem, paper=study.PAPER)


def fig2_figure(results: Path, root: Path, stem: Path, scale: str = "cpu") -> list[Path]:
    """Figure 2: accuracy against attack steps (eval.json `curves`), each network's mean over its evaluated seeds
    with their band (at paper scale, one figure per optimizer)."""
    folder = results / f"fig2-{scale}"

    def draw(experiment: Any, out: Path) -> list[Path]:
        runs = [(label, d) for label, d in _every_seed(experiment, folder, fig2.ROWS)
                if RunFolder(d).require_evaluation().curves]
        if not runs:
            raise NotDrawn(f"no eval.json in `{relative(folder, root)}/` holds `curves`")
        return plots.plot_steps([d for _, d in runs], out, labels=[label for label, _ in runs])

    return _each_variant("fig2", scale, folder, stem, draw)


def table1_convergence(results: Path, root: Path, stem: Path, scale: str = "cpu") -> list[Path]:
    """Clean and PGD test accuracy per epoch (metrics.jsonl) of each Table 1 run, every seed in its panel."""
    folder = results / f"table1-{scale}"

    def draw(experiment: Any, out: Path) -> list[Path]:
        first = experiment.tables[0].part  # the rows of the other parts (Tiny ImageNet) name theirs
        rows = [(row.label if spec.part == first else f"{row.label}, {spec.part}", row.group)
                for spec in experiment.tables for row in spec.rows]
        runs = _every_seed(experiment, folder, rows)
        if not runs:
            raise NotDrawn(f"no eval.json in `{relative(folder, root)}/`")
        return plots.plot_convergence([d for _, d in runs], out, labels=[label for label, _ in runs])

    return _each_variant("table1", scale, folder, stem, draw)


def table4_infoplane(results: Path, root: Path, stem: Path, scale: str = "cpu") -> list[Path]:
    """Figure 5: the information plane (info_plane.jsonl) of Table 4's VGG16 rows (2) and (1), first seed (at
    paper scale, one figure per optimizer)."""
    folder = results / f"table4-{scale}"
    rows = [(label, group) for group, label in table4.INFOPLANE]

    def draw(experiment: Any, out: Path) -> list[Path]:
        runs = [(label, d) for label, d in _first_runs(experiment, folder, rows)
                if RunFolder(d).info_plane_file.is_file()]
        if not runs:
            groups = " or ".join(f"`{group}`" for group, _ in table4.INFOPLANE)
            raise NotDrawn(f"no run of {groups} in `{relative(folder, root)}/` has info_plane.jsonl (a file "
                           f"over {OPTIONAL_SIZE_LIMIT >> 20} MiB is not collected)")
        return plots.plot_infoplane([d for _, d in runs], out, labels=[label for label, _ in runs])

    return _each_variant("table4", scale, folder, stem, draw)


def table4_tsne(results: Path, root: Path, stem: Path, scale: str = "paper") -> list[Path]:
    """Figure 3: t-SNE of the fc2 features of rows (1) and (6), first seed, from the features saved beside the
    evaluation (`tsne-features.npz`: the GPU kit computes them before the weights go with the machine), one
    figure per optimizer."""
    folder = results / f"table4-{scale}"

    def draw(experiment: Any, out: Path) -> list[Path]:
        rows = [(label, group) for group, label in table4.TSNE]
        runs = [(label, RunFolder(d).features_file) for label, d in _first_runs(experiment, folder, rows)]
        if len(runs) < len(rows) or not all(file.is_file() for _, file in runs):
            raise NotDrawn(f"rows (1) and (6) in `{relative(folder, root)}/` need an eval.json and a "
                           f"{FEATURES_FILE} each")
        return plots.plot_tsne([load_features(file) for _, file in runs], out, labels=[label for label, _ in runs])

    return _each_variant("table4", scale, folder, stem, draw)


def table4_confusion(results: Path, root: Path, stem: Path, scale: str = "paper") -> list[Path]:
    """Table 5: where row (6)'s PGD-10 examples land, first seed, from the counts saved beside the evaluation
    (`confusion-pgd10.json`), one table and heatmap per optimizer."""
    folder = results / f"table4-{scale}"

    def draw(experiment: Any, out: Path) -> list[Path]:
        files = [RunFolder(d).confusion_file for _, d in _first_runs(experiment, folder, [("", table4.CONFUSION)])]
        if not files or not files[0].is_file():
            raise NotDrawn(f"row (6) in `{relative(folder, root)}/` needs an eval.json and a "
                           f"{CONFUSION_FILE}")
        return plots.plot_confusion(load_confusion(files[0]), out)

    return _each_variant("table4", scale, folder, stem, draw)


# The scale study's 60-epoch pair: the one CPU setting in which IB-RAR holds under the paper's attacks (and
# AutoAttack takes it away), so the one where Figure 3 and Table 5 have something to show at CPU scale.
LONG_PAIR = (("6-ibrar-epochs60", "(6) IB-RAR, 60 epochs"), ("1-ce-epochs60", "(1) CE only, 60 epochs"))


def _first_with(results: Path, scale: str, wanted: Callable[[RunFolder], Path]) -> dict[str, tuple[str, Path]]:
    """Per LONG_PAIR row that has the file in its first evaluated seed that does: (label with that seed, file)."""
    folder = results / f"scale-{scale}"
    experiment = collected_experiment("scale", scale, folder)
    found = {}
    for group, label in LONG_PAIR:
        runs = (RunFolder(d) for d in group_dirs(experiment, folder, [group]))
        run = next((r for r in runs if wanted(r).is_file()), None)
        if run is not None:
            found[group] = (f"{label}, seed {run.config_dict().get('seed', 0)}", wanted(run))
    return found


def scale_tsne(results: Path, root: Path, stem: Path, scale: str = "cpu") -> list[Path]:
    """Figure 3 for the scale study's 60-epoch pair: t-SNE of the fc2 features saved beside each run."""
    runs = list(_first_with(results, scale, lambda run: run.features_file).values())
    if len(runs) < len(LONG_PAIR):
        raise NotDrawn(f"rows (1) and (6) at 60 epochs in `{relative(results / f'scale-{scale}', root)}/` need a "
                       f"{FEATURES_FILE} each")
    return plots.plot_tsne([load_features(file) for _, file in runs], stem, labels=[label for label, _ in runs])


def scale_confusion(results: Path, root: Path, stem: Path, scale: str = "cpu") -> list[Path]:
    """Table 5 for the scale study's 60-epoch IB-RAR network (`stem`), where its PGD-10 examples land, and for
    its CE-only twin (`<stem>-ce-only`) where it has the counts: what comes with any adversarial example and what
    with IB-RAR."""
    (ibrar_group, _), (ce_group, _) = LONG_PAIR
    found = _first_with(results, scale, lambda run: run.confusion_file)
    if ibrar_group not in found:
        raise NotDrawn(f"row (6) at 60 epochs in `{relative(results / f'scale-{scale}', root)}/` needs a "
                       f"{CONFUSION_FILE}")
    drawn = plots.plot_confusion(load_confusion(found[ibrar_group][1]), stem)
    if ce_group in found:
        drawn += plots.plot_confusion(load_confusion(found[ce_group][1]), Path(f"{stem}-ce-only"))
    return drawn


def at_paper_scale(draw: Callable[..., list[Path]]) -> Callable[[Path, Path, Path], list[Path]]:
    """`draw` of the runs a lease brought back (`results/<experiment>-paper/`)."""
    def paper(results: Path, root: Path, stem: Path) -> list[Path]:
        return draw(results, root, stem, scale="paper")

    return paper


@dataclass(frozen=True)
class DocFigure:
    """A figure redrawn from results/ alone: its file stem under docs/figures/ and the function that draws it."""

    name: str
    draw: Callable[[Path, Path, Path], list[Path]]  # (results folder, repository root, out stem) -> files


FIGURES: tuple[DocFigure, ...] = (
    DocFigure("scale-cpu-scale-study", scale_figure),
    DocFigure("scale-cpu-60epochs-fig3-tsne", scale_tsne),
    DocFigure("scale-cpu-60epochs-table5-confusion", scale_confusion),
    DocFigure("fig2-cpu-steps", fig2_figure),
    DocFigure("table1-cpu-convergence", table1_convergence),
    DocFigure("table4-cpu-fig5-infoplane", table4_infoplane),
    # a lease's runs (`bench/gpu/`): one file per optimizer, `-authors-optim` appended for the authors' code's
    DocFigure("table4-paper-fig3-tsne", at_paper_scale(table4_tsne)),
    DocFigure("table4-paper-table5-confusion", at_paper_scale(table4_confusion)),
    DocFigure("table4-paper-fig5-infoplane", at_paper_scale(table4_infoplane)),
    DocFigure("fig2-paper-steps", at_paper_scale(fig2_figure)),
    DocFigure("table1-paper-convergence", at_paper_scale(table1_convergence)),
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
