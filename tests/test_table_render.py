"""A table is declared once and drawn by one renderer: the difference rows of its pairs, the paper's rows, its
digits, the side-by-side and gain layouts, and results.md showing the very table lines the docs show."""

from __future__ import annotations

import pytest

from ibrar import report
from ibrar.experiments import build_experiment
from ibrar.experiments.measure import Cell, MeasuredRow, MeasuredTable
from ibrar.experiments.render import render_table, signed
from ibrar.experiments.table_spec import ColumnSpec, Gain, RowSpec, TableSpec
from test_report import TABLE1_PGD_AT, TABLE1_PGD_AT_IBRAR, fake_run

COLUMNS = (ColumnSpec("Natural", "clean"), ColumnSpec("PGD", "pgd10"))
PAPER = {"base": {"Natural": 70.0, "PGD": 40.0}, "ib": {"Natural": 72.5, "PGD": 39.0}}


def pair_spec(**kwargs) -> TableSpec:
    rows = (RowSpec("Base", "base"), RowSpec("Base + IB-RAR", "ib"))
    return TableSpec("A pair", rows, COLUMNS, **{"paper": PAPER, "paper_layout": "rows", "mark_ours": True,
                                                 "pairs": (("base", "ib"),), "row_header": "method", **kwargs})


def measured(spec: TableSpec, values: dict[str, dict[str, tuple[float, ...]]], runs: dict[str, int] | None = None,
             scale: str = "cpu") -> MeasuredTable:
    """A measured table without run folders: each row's values per column, the paper's from the spec."""
    rows = tuple(MeasuredRow(row, {c.label: Cell(values.get(row.group, {}).get(c.label, ()),
                                                 spec.paper.get(row.group, {}).get(c.label)) for c in spec.columns},
                             (runs or {}).get(row.group, 1), 1) for row in spec.rows)
    labels = tuple(c.label for c in spec.columns)
    return MeasuredTable(spec, rows, labels, tuple(c.shown for c in spec.columns), scale)


def test_a_pair_gets_its_difference_row_and_the_papers_rows_under_ours():
    table = measured(pair_spec(digits=1), {"base": {"Natural": (60.0, 61.0), "PGD": (30.0,)},
                                           "ib": {"Natural": (62.0,), "PGD": (29.2,)}})
    assert render_table(table) == [
        "| method | Natural | PGD-10 |",
        "| --- | --- | --- |",
        "| Base (ours, cpu) | 60.5 ± 0.7 | 30.0 |",
        "| Base + IB-RAR (ours, cpu) | 62.0 | 29.2 |",
        "| difference | +1.5 | −0.8 |",
        "| Base (paper) | 70.00 | 40.00 |",
        "| Base + IB-RAR (paper) | 72.50 | 39.00 |",
        "| difference (paper) | +2.5 | −1.0 |",
    ]


def test_the_declared_digits_are_honoured_and_the_papers_numbers_keep_two():
    table = measured(pair_spec(digits=2), {"base": {"Natural": (60.0, 61.0)}, "ib": {"Natural": (62.0,)}})
    lines = render_table(table)
    assert lines[2] == "| Base (ours, cpu) | 60.50 ± 0.71 | - |"
    assert lines[4] == "| difference | +1.50 | - |"  # a side without the number: no difference
    assert lines[-1] == "| difference (paper) | +2.50 | −1.00 |"
    assert signed(0.004, 2) == "0.00" and signed(-0.5, 1) == "−0.5"


def test_a_row_without_an_evaluated_run_says_not_run_and_one_without_the_attack_a_dash():
    table = measured(pair_spec(paper_layout="none", mark_ours=False), {"base": {"Natural": (50.0,)}},
                     runs={"base": 1, "ib": 0})
    assert render_table(table)[2:] == ["| Base | 50.00 | - |", "| Base + IB-RAR | not run | not run |",
                                       "| difference | - | - |"]


def test_the_paper_rows_are_left_out_where_the_paper_gives_no_number():
    table = measured(pair_spec(paper={}), {"base": {"Natural": (50.0,)}, "ib": {"Natural": (51.0,)}})
    assert [line.split(" | ")[0] for line in render_table(table)[2:]] == [
        "| Base (ours, cpu)", "| Base + IB-RAR (ours, cpu)", "| difference"]


def test_side_by_side_joins_each_sides_columns_and_shows_only_the_papers_columns():
    columns = (ColumnSpec("Natural", "clean", short="Nat"), ColumnSpec("AutoAttack", "autoattack", header="AA"))
    rows = (RowSpec("(1) CE", "a-ce", side="A"), RowSpec("(2) IB", "a-ib", side="A"),
            RowSpec("(1) CE", "b-ce", side="B"), RowSpec("(2) IB", "b-ib", side="B"))
    spec = TableSpec("Side by side", rows, columns, digits=1, paper={"a-ce": {"Natural": 90.0}}, row_header="row")
    table = measured(spec, {"a-ce": {"Natural": (61.25,), "AutoAttack": (0.0,)}, "a-ib": {"Natural": (62.0,)},
                            "b-ce": {"Natural": (64.0,), "AutoAttack": (1.0,)}}, runs={"b-ib": 0})
    assert render_table(table) == [
        "| row | A: Natural / AA | paper A (Nat) | B: Natural / AA | paper B (Nat) |",
        "| --- | --- | --- | --- | --- |",
        "| (1) CE | 61.3 / 0.0 | 90.00 | 64.0 / 1.0 | - |",  # 61.25: a half rounds away from zero
        "| (2) IB | 62.0 / - | - | not run | - |",
    ]


def test_a_gain_column_is_each_row_minus_the_reference_row():
    rows = (RowSpec("CE only", "ce"), RowSpec("IB on fc1", "layer-fc1"), RowSpec("IB on fc2", "layer-fc2"))
    spec = TableSpec("Layers", rows, COLUMNS, digits=1, row_header="network", gain=Gain("PGD", "ce", "PGD − CE"))
    table = measured(spec, {"ce": {"PGD": (0.1,)}, "layer-fc1": {"PGD": (2.6,)}, "layer-fc2": {"PGD": (0.1,)}})
    assert [line.rsplit(" | ", 1)[1] for line in render_table(table)[2:]] == ["- |", "+2.5 |", "0.0 |"]


def test_a_declaration_naming_a_group_it_has_no_row_for_is_refused():
    with pytest.raises(ValueError, match="pairs/gain"):
        pair_spec(pairs=(("base", "other"),))
    with pytest.raises(ValueError, match="paper_layout"):
        pair_spec(paper_layout="below")
    with pytest.raises(ValueError, match="gain.column"):
        pair_spec(gain=Gain("CW", "base", "CW − base"))


def _table_blocks(text: str) -> list[list[str]]:
    """The markdown tables of a text, each as its lines."""
    blocks, current = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            blocks.append(current)
            current = []
    return blocks


@pytest.mark.parametrize("name", ["table1", "table3", "table6"])
def test_results_md_shows_the_same_table_lines_as_the_docs(name, tmp_path):
    results = tmp_path / "results"
    folder = results / f"{name}-cpu"
    if name == "table1":
        fake_run(folder, "vgg16-cifar10-pgd_at", 36.9, TABLE1_PGD_AT)
        fake_run(folder, "vgg16-cifar10-pgd_at-ibrar", 43.6, TABLE1_PGD_AT_IBRAR)
        docs = report.table1_tables(results, tmp_path)
    elif name == "table3":
        fake_run(folder, "ce", 61.8, {"pgd10": 0.1, "autoattack": 0.0})
        fake_run(folder, "layer-block5", 63.0, {"pgd10": 2.6, "autoattack": 0.0})
        docs = report.table3_table(results, tmp_path)
    else:
        for group, clean in (("plain-ce", 61.8), ("plain-ibrar", 63.1), ("at-ibrar", 44.1)):
            fake_run(folder, group, clean, {"pgd10": 1.0, "adaptive10": 2.0, "adaptive100": 1.5, "autoattack": 0.5})
        docs = report.table6_table(results, tmp_path)
    experiment = build_experiment(name, "cpu")
    markdown = experiment.report(experiment, folder, None).to_markdown()
    # the docs' own lines under a table (its provenance, the masking verdicts) are not part of the table
    shown = [block for block in _table_blocks(docs) if not block[0].startswith("| run | verdict |")]
    assert shown and all(block in _table_blocks(markdown) for block in shown)
    if name == "table3":  # the rows not run are there too, and the gain over CE only
        assert "| IB on block5 | 63.0 | 2.6 | 0.0 | +2.5 |" in shown[0]
        assert "| IB on fc1 | not run | not run | not run | - |" in shown[0]


def test_results_md_states_the_seeds_its_rows_were_evaluated_with(tmp_path):
    folder = tmp_path / "table1-cpu"
    experiment = build_experiment("table1", "cpu", seeds=2)
    assert "Seeds per row: 2 (none evaluated yet)" in experiment.report(experiment, folder, None).to_markdown()
    fake_run(folder, "vgg16-cifar10-pgd_at-seed0", 36.9, TABLE1_PGD_AT)
    fake_run(folder, "vgg16-cifar10-pgd_at-seed1", 37.9, TABLE1_PGD_AT)
    fake_run(folder, "vgg16-cifar10-pgd_at-ibrar-seed0", 43.6, TABLE1_PGD_AT_IBRAR)
    assert "Seeds per row: 1 to 2 (" in experiment.report(experiment, folder, None).to_markdown()
    fake_run(folder, "vgg16-cifar10-pgd_at-ibrar-seed1", 42.6, TABLE1_PGD_AT_IBRAR)
    assert "Seeds per row: 2 (" in experiment.report(experiment, folder, None).to_markdown()
