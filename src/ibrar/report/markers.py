"""The `<!-- report:NAME -->` ... `<!-- /report -->` sections of the docs: which renderer fills each, rewriting
them in place (`ibrar report`) and naming the ones that drifted from results/ (`ibrar report --check`)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ibrar.ledger import claims_section
from ibrar.report.collect import RESULTS_DIR, ReportError
from ibrar.report.profiles import profile_table
from ibrar.report.sections import (
    bench_sections,
    fig2_paper_tables,
    fig2_tables,
    gpu_check_section,
    scale_tables,
    table1_paper_tables,
    table4_paper_table,
    table6_paper_table,
)
from ibrar.report.tables import (
    ce_fast_table,
    quickstart_table,
    table1_tables,
    table2_tables,
    table3_table,
    table4_table,
    table6_table,
)

MARKER = re.compile(r"(<!-- report:(?P<name>[A-Za-z0-9_.-]+) -->\n)(?P<body>.*?)(<!-- /report -->)", re.S)


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
    DocTable("table1-paper", "docs/reproduction.md", table1_paper_tables),
    DocTable("table2-cpu", "docs/reproduction.md", table2_tables),
    DocTable("table4-cpu", "docs/reproduction.md", table4_table),
    DocTable("table4-paper", "docs/reproduction.md", table4_paper_table),
    DocTable("table3-cpu", "docs/reproduction.md", table3_table),
    DocTable("table6-cpu", "docs/reproduction.md", table6_table),
    DocTable("table6-paper", "docs/reproduction.md", table6_paper_table),
    DocTable("fig2-cpu", "docs/reproduction.md", fig2_tables),
    DocTable("fig2-paper", "docs/reproduction.md", fig2_paper_tables),
    DocTable("scale-cpu", "docs/reproduction.md", scale_tables),
    DocTable("ce-fast", "docs/reproduction.md", ce_fast_table),
    DocTable("bench", "bench/RESULTS.md", bench_sections),
    DocTable("gpu-check", "bench/RESULTS.md", gpu_check_section),
    DocTable("profiles", "docs/profiles.md", profile_table),
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
