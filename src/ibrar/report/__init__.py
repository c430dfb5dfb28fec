"""`ibrar report`: every table of numbers in README.md, docs/reproduction.md and bench/RESULTS.md is generated
from the small run artifacts committed under `results/`, so that each number traces back to the run that made it.

`collect_run` copies a finished run's small files (never a checkpoint) into `results/` (`collect`); `render_docs`
rewrites the text between `<!-- report:NAME -->` and `<!-- /report -->` in the docs and leaves the prose around it
alone, and `check_docs` names the tables whose text no longer matches the artifacts (`markers`). The paper's tables
are the ones each experiment declares, measured and rendered as its results.md shows them (`ibrar.experiments.
table_spec`, `measure`, `render`); `tables` and `sections` pick them and add the lines saying where their numbers
come from (`provenance`), and `figures` draws the figures under docs/figures/.
"""

from __future__ import annotations

from ibrar.report.collect import (
    ARTIFACTS,
    FIGURE_INPUTS,
    OPTIONAL_SIZE_LIMIT,
    RESULTS_DIR,
    ReportError,
    collect_run,
    collect_table6_view,
    copy_artifacts,
    default_into,
    partial_folder,
)
from ibrar.report.figures import (
    FIGURES,
    FIGURES_DIR,
    DocFigure,
    NotDrawn,
    draw_figures,
    fig2_figure,
    scale_figure,
    table1_convergence,
    table4_infoplane,
)
from ibrar.report.markers import MARKER, TABLES, DocTable, check_docs, render_docs, write_docs
from ibrar.report.provenance import (
    eps_text,
    evaluation_notes,
    linf_worst_case,
    machine_of,
    not_run,
    source_line,
    training_legs,
)
from ibrar.report.sections import (
    BENCH_FIELDS,
    attack_strength_tables,
    bench_sections,
    fig2_paper_tables,
    fig2_tables,
    gpu_check_section,
    paper_partial_table,
    read_bench,
    scale_tables,
    table1_paper_tables,
    table4_paper_table,
    table6_paper_table,
)
from ibrar.report.tables import (
    ce_fast_table,
    quickstart_table,
    runs_table,
    table1_tables,
    table2_tables,
    table3_table,
    table4_table,
    table6_table,
)

__all__ = [
    "ARTIFACTS", "BENCH_FIELDS", "DocFigure", "DocTable", "FIGURES", "FIGURES_DIR", "FIGURE_INPUTS", "MARKER",
    "NotDrawn", "OPTIONAL_SIZE_LIMIT", "RESULTS_DIR", "ReportError", "TABLES", "attack_strength_tables",
    "bench_sections", "ce_fast_table", "check_docs", "collect_run", "collect_table6_view", "copy_artifacts",
    "default_into", "draw_figures", "eps_text", "evaluation_notes", "fig2_figure", "fig2_paper_tables", "fig2_tables",
    "gpu_check_section", "linf_worst_case", "machine_of", "not_run", "paper_partial_table", "partial_folder",
    "quickstart_table", "read_bench", "render_docs", "runs_table", "scale_figure", "scale_tables", "source_line",
    "table1_convergence", "table1_paper_tables", "table1_tables", "table2_tables", "table3_table", "table4_infoplane",
    "table4_paper_table", "table4_table", "table6_paper_table", "table6_table", "training_legs", "write_docs",
]
