"""`ibrar report`: collecting run artifacts, generating the documented tables from them, and failing on drift."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest

from conftest import tiny_config
from ibrar import report
from ibrar.cli import main
from ibrar.config import build_config, dump_config

REPO = Path(__file__).resolve().parent.parent
DOCS = ("README.md", "docs/reproduction.md", "bench/RESULTS.md")
LINF = ["fgsm", "pgd10", "fab", "nifgsm", "autoattack"]


def fake_run(folder: Path, name: str, clean: float, attacks: dict[str, float], worst_case: float | None = None,
             linf: list[str] | None = LINF, minutes: float = 40.0, commit: str = "0123456789abcdef",
             started: str = "2026-11-26T01:02:03+00:00", n: int = 1000, extra: tuple[str, ...] = ()) -> Path:
    """A finished run folder in the real on-disk formats (what `ibrar train` and `ibrar eval` write)."""
    run_dir = folder / name
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(dump_config(build_config(tiny_config(folder, name=name))))
    meta = {"ibrar_version": "0.1.0", "git_commit": commit, "python": "3.11.7", "torch": "2.14.1", "cuda": None,
            "seed": 0, "device": "cpu", "platform": "Linux", "processor": "x86_64", "cpu_count": 2,
            "torch_threads": 1, "started": started, "world_size": 1}
    (run_dir / "meta.json").write_text(json.dumps(meta, indent=2))
    epochs = 10
    (run_dir / "metrics.jsonl").write_text("".join(
        json.dumps({"epoch": e + 1, "lr": 0.01, "loss": 1.0, "test_clean_acc": clean / 100,
                    "seconds": minutes * 60 / epochs}) + "\n" for e in range(epochs)))
    (run_dir / "info_plane.jsonl").write_text(json.dumps({"iteration": 1, "layer": "fc1", "hsic_x": 1.0}) + "\n")
    result = {
        "n": n, "seed": 0, "clean": clean / 100, "eps": 8 / 255,
        "worst_case": (min(v for a, v in attacks.items() if a in (linf or LINF)) if worst_case is None
                       else worst_case) / 100,
        "worst_case_only": False, "seconds": 600.0,
        "attacks": [{"name": a, "attack": a.upper(), "params": {}, "accuracy": acc / 100, "n_robust": 0,
                     "n_attacked": n, "seconds": 1.0, "loss_clean": 0.5, "loss_adv": 2.0}
                    for a, acc in attacks.items()],
        "warnings": [], "reference": None,
        "meta": {**meta, "git_commit": "fedcba9876543210", "started": "2026-11-27T05:00:00+00:00"},
    }
    if linf is not None:
        result["worst_cases"] = [{"norm": "Linf", "eps": 8 / 255, "attacks": linf, "accuracy": result["worst_case"]},
                                 {"norm": "L2", "eps": None, "attacks": ["cw"], "accuracy": 0.05}]
    for attack in result["attacks"]:
        if attack["name"] == "cw":  # an L2 attack: its own threat model and the size of what it found
            attack.update(norm="L2", eps=None, median_l2=0.5 + clean / 1000)
    (run_dir / "eval.json").write_text(json.dumps(result, indent=2))
    for file in extra:
        (run_dir / file).write_bytes(b"not a real checkpoint")
    return run_dir


@pytest.fixture
def checkout(tmp_path) -> Path:
    """A copy of the repository's docs with an empty results/ folder."""
    for doc in DOCS:
        (tmp_path / doc).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / doc, tmp_path / doc)
    (tmp_path / "results").mkdir()
    return tmp_path


def prose(text: str) -> str:
    """A doc without the generated parts between its markers."""
    return report.MARKER.sub(lambda m: m.group(1) + m.group(4), text)


def block(text: str, name: str) -> str:
    return next(m.group("body") for m in report.MARKER.finditer(text) if m.group("name") == name)


TABLE1_PGD_AT = {"fgsm": 26.1, "pgd10": 24.8, "cw": 18.0, "fab": 21.9, "nifgsm": 27.2, "autoattack": 21.1}
TABLE1_PGD_AT_IBRAR = {"fgsm": 27.0, "pgd10": 25.9, "cw": 17.5, "fab": 22.1, "nifgsm": 27.9, "autoattack": 20.6}


# ---- the committed artifacts and docs -----------------------------------------------------------------


def test_the_documented_tables_regenerate_byte_identical_from_the_committed_results():
    assert report.check_docs(REPO) == []


def test_committed_results_hold_only_small_artifacts_and_no_checkpoint():
    results = REPO / "results"
    assert not list(results.rglob("*.pt"))
    for path in results.rglob("*"):
        if path.is_file():
            in_bench = path.relative_to(results).parts[0] == "bench"
            allowed = path.suffix == ".json" if in_bench else path.name in report.ARTIFACTS
            assert allowed, f"{path} is not a collected artifact"
            assert path.stat().st_size < 4 << 20, f"{path} is not small"


# ---- rendering ----------------------------------------------------------------------------------------


def test_render_fills_every_table_and_leaves_the_prose_alone(checkout):
    results = checkout / "results"
    fake_run(results / "quickstart", "quickstart", 70.8, {"fgsm": 7.1, "pgd10": 0.1})
    fake_run(results / "quickstart", "quickstart-ce", 69.8, {"fgsm": 4.3, "pgd10": 0.0})
    fake_run(results / "table1-cpu", "vgg16-cifar10-pgd_at", 36.1, TABLE1_PGD_AT)
    fake_run(results / "table1-cpu", "vgg16-cifar10-pgd_at-ibrar", 42.6, TABLE1_PGD_AT_IBRAR)
    fake_run(results / "table4-cpu", "vgg16-1-ce", 60.6, {"pgd10": 0.2, "nifgsm": 1.1, "fgsm": 3.5, "autoattack": 0.0})
    before = {doc: (checkout / doc).read_text() for doc in DOCS}

    written = report.write_docs(checkout)

    assert {p.relative_to(checkout).as_posix() for p in written} == set(DOCS)  # bench: "not run" here
    after = {doc: (checkout / doc).read_text() for doc in DOCS}
    assert {doc: prose(text) for doc, text in after.items()} == {doc: prose(text) for doc, text in before.items()}
    quickstart = block(after["README.md"], "quickstart")
    assert "| IB-RAR (quickstart) | 70.8% | 7.1% | 0.1% |" in quickstart
    assert "| CE only (quickstart-ce) | 69.8% | 4.3% | 0.0% |" in quickstart
    assert "AutoAttack" not in quickstart  # not evaluated, so no column
    assert "`results/quickstart/`" in quickstart and "commit `0123456`" in quickstart
    assert "Trained 2026-11-26" in quickstart and "x86_64 (2 cores), 1 torch thread, no GPU" in quickstart
    assert "10 epochs, 40.0 and 40.0 min." in quickstart
    assert "Evaluated 2026-11-27 at commit `fedcba9` on x86_64" in quickstart
    assert ": 1,000 test images (seed 0), 10.0 and 10.0 min." in quickstart
    table4 = block(after["docs/reproduction.md"], "table4-cpu")
    assert "| (1) CE only | 60.6 / 0.2 / 1.1 / 3.5 / 0.0 | 89.99 / 0.10 / 0.18 / 11.80 | not run |" in table4
    assert "| (2) IB loss | not run | 92.03 / 12.39 / 13.90 / 43.49 | not run |" in table4
    assert report.check_docs(checkout) == []
    assert report.write_docs(checkout) == []  # a second run changes nothing


def test_table1_puts_each_pair_beside_the_paper_and_keeps_cw_out_of_the_linf_worst_case(checkout):
    results = checkout / "results"
    fake_run(results / "table1-cpu", "vgg16-cifar10-pgd_at", 36.1, TABLE1_PGD_AT, worst_case=19.9)
    fake_run(results / "table1-cpu", "vgg16-cifar10-pgd_at-ibrar", 42.6, TABLE1_PGD_AT_IBRAR, worst_case=19.6)
    text = report.table1_tables(results, checkout)

    header = "| method | Natural | PGD-10 | CW-L2 | FGSM | FAB | NI-FGSM | AutoAttack | L∞ worst case |"
    assert header in text
    assert "| PGD-AT (ours, cpu) | 36.10 | 24.80 | 18.00 | 26.10 | 21.90 | 27.20 | 21.10 | 19.90 |" in text
    assert "| difference | +6.50 | +1.10 | −0.50 | +0.90 | +0.20 | +0.70 | −0.50 | −0.30 |" in text
    assert "| PGD-AT (paper) | 75.02 | 42.45 | 37.80 | 47.32 | 41.03 | 47.59 | - | - |" in text
    assert "| difference (paper) | +1.20 | +2.64 | +4.03 | +3.21 | +5.19 | +4.34 | - | - |" in text
    assert "**TRADES, CIFAR-10 with VGG16**: not run (no eval.json in `results/table1-cpu/vgg16-cifar10-trades/`" \
        in text
    assert "Median L2 size of the successful CW-L2 perturbations: `vgg16-cifar10-pgd_at` 0.536, " \
        "`vgg16-cifar10-pgd_at-ibrar` 0.543." in text
    linf_note = re.search(r"CW-L2 is an L2 attack.*", text).group(0)
    assert "(ε = 8/255: fgsm, pgd10, fab, nifgsm, autoattack)" in linf_note
    assert "cw" not in linf_note.split("(ε = 8/255:")[1]


def test_an_eval_json_without_threat_models_shows_no_linf_worst_case(checkout):
    results = checkout / "results"
    # written before the worst case was split by threat model: its worst_case may include CW-L2
    fake_run(results / "table1-cpu", "vgg16-cifar10-pgd_at", 36.1, TABLE1_PGD_AT, linf=None)
    text = report.table1_tables(results, checkout)
    assert "| PGD-AT (ours, cpu) | 36.10 | 24.80 | 18.00 | 26.10 | 21.90 | 27.20 | 21.10 | - |" in text
    assert "| PGD-AT + IB-RAR (ours, cpu) | not run |" in text
    assert "without `worst_cases`" in text


def test_seeds_are_averaged_with_their_spread(checkout):
    results = checkout / "results"
    for seed, clean in enumerate((60.0, 62.0)):
        fake_run(results / "table4-cpu", f"vgg16-1-ce-seed{seed}", clean,
                 {"pgd10": 0.0, "nifgsm": 1.0, "fgsm": 3.0, "autoattack": 0.0})
    text = report.table4_table(results, checkout)
    assert "| (1) CE only | 61.0 ± 1.4 / 0.0 ± 0.0 / 1.0 ± 0.0 / 3.0 ± 0.0 / 0.0 ± 0.0 |" in text
    assert "Source: `vgg16-1-ce-seed0`, `vgg16-1-ce-seed1` in `results/table4-cpu/`" in text


def test_an_attack_a_run_was_not_evaluated_with_shows_a_dash_not_a_number(checkout):
    results = checkout / "results"
    fake_run(results / "table4-cpu", "vgg16-1-ce", 60.6, {"pgd10": 0.2, "nifgsm": 1.1, "fgsm": 3.5})
    assert "| (1) CE only | 60.6 / 0.2 / 1.1 / 3.5 / - |" in report.table4_table(results, checkout)


def test_tables_without_artifacts_say_not_run(checkout):
    results = checkout / "results"
    assert report.table4_table(results, checkout) == "Table 4: not run (no eval.json in `results/table4-cpu/`)."
    assert report.quickstart_table(results, checkout).startswith("The quickstart pair: not run")
    assert report.bench_sections(results, checkout).startswith("Benchmarks: not run")


# ---- drift ------------------------------------------------------------------------------------------


def test_check_names_the_table_that_drifted_and_the_cli_exits_1(checkout, capsys):
    fake_run(checkout / "results" / "table4-cpu", "vgg16-1-ce", 60.6,
             {"pgd10": 0.2, "nifgsm": 1.1, "fgsm": 3.5, "autoattack": 0.0})
    report.write_docs(checkout)
    doc = checkout / "docs" / "reproduction.md"
    doc.write_text(doc.read_text().replace("| (1) CE only | 60.6 /", "| (1) CE only | 61.6 /"))

    assert report.check_docs(checkout) == [
        "docs/reproduction.md: table 'table4-cpu' differs from results/; run `ibrar report` to regenerate it"]
    assert main(["report", "--check", "--root", str(checkout)]) == 1
    assert "table 'table4-cpu' differs" in capsys.readouterr().err
    assert main(["report", "--root", str(checkout)]) == 0
    assert main(["report", "--check", "--root", str(checkout)]) == 0


def test_a_changed_artifact_is_drift_too(checkout):
    run = fake_run(checkout / "results" / "quickstart", "quickstart", 70.8, {"fgsm": 7.1, "pgd10": 0.1})
    report.write_docs(checkout)
    result = json.loads((run / "eval.json").read_text())
    result["clean"] = 0.5
    (run / "eval.json").write_text(json.dumps(result))
    assert [line.split(":")[0] for line in report.check_docs(checkout)] == ["README.md"]


def test_unknown_or_missing_markers_are_refused(checkout):
    readme = checkout / "README.md"
    text = readme.read_text()
    readme.write_text(text + "\n<!-- report:tabel4 -->\n<!-- /report -->\n")
    with pytest.raises(report.ReportError, match="unknown report markers \\['tabel4'\\]"):
        report.render_docs(checkout)
    readme.write_text(text.replace("<!-- report:quickstart -->", "<!-- quickstart -->"))
    with pytest.raises(report.ReportError, match="expected one '<!-- report:quickstart -->'"):
        report.render_docs(checkout)


# ---- collecting -------------------------------------------------------------------------------------


def test_collect_copies_the_small_artifacts_and_never_a_checkpoint(tmp_path):
    run = fake_run(tmp_path / "runs" / "table4-cpu", "vgg16-1-ce", 60.6, {"fgsm": 3.5},
                   extra=("checkpoint.pt", "final.pt", "events.out.tfevents.1"))
    target = report.collect_run(run, tmp_path / "results" / "table4-cpu")
    assert target == tmp_path / "results" / "table4-cpu" / "vgg16-1-ce"
    assert sorted(p.name for p in target.iterdir()) == sorted(report.ARTIFACTS)
    assert (target / "eval.json").read_bytes() == (run / "eval.json").read_bytes()
    # collecting again (after a re-evaluation) replaces the copy
    (run / "eval.json").write_text((run / "eval.json").read_text().replace('"clean": 0.606', '"clean": 0.7'))
    report.collect_run(run, tmp_path / "results" / "table4-cpu")
    assert '"clean": 0.7' in (target / "eval.json").read_text()


def test_collect_defaults_to_the_experiment_folder_and_leaves_a_large_info_plane_behind(tmp_path, monkeypatch):
    run = fake_run(tmp_path / "runs" / "table1-cpu", "vgg16-cifar10-pgd_at", 36.1, {"fgsm": 26.1})
    (run / "info_plane.jsonl").write_text("x" * (report.OPTIONAL_SIZE_LIMIT + 1))
    monkeypatch.chdir(tmp_path)
    target = report.collect_run(run)
    assert target == Path("results/table1-cpu/vgg16-cifar10-pgd_at")
    assert not (target / "info_plane.jsonl").exists() and (target / "metrics.jsonl").is_file()


def test_collect_refuses_unfinished_runs_checkpoints_and_ambiguous_targets(tmp_path, capsys):
    run = fake_run(tmp_path / "runs", "quickstart", 70.8, {"fgsm": 7.1}, extra=("final.pt",))
    with pytest.raises(report.ReportError, match="--into"):
        report.collect_run(run)  # runs/quickstart: no experiment folder to name the results folder after
    with pytest.raises(report.ReportError, match="is a file"):
        report.collect_run(run / "final.pt", tmp_path / "results")
    (run / "eval.json").unlink()
    code = main(["report", "collect", str(run), "--into", str(tmp_path / "results")])
    assert code == 2
    assert "has no eval.json" in capsys.readouterr().err
    assert not (tmp_path / "results" / "quickstart").exists()
    assert main(["report", "collect"]) == 2


def test_a_real_trained_and_evaluated_run_collects_and_renders(image_folder, tmp_path, checkout):
    from ibrar.run_eval import evaluate_run
    from ibrar.train import train

    run_dir = tmp_path / "runs" / "quickstart"
    config = build_config(tiny_config(image_folder, name="quickstart", train={"epochs": 1, "eval_subset": 8,
                                                                              "info_plane_every": 2}))
    train(config, run_dir, quiet=True)
    evaluate_run(run_dir, attacks=["fgsm", "pgd2"], n=16, quiet=True)
    assert main(["report", "collect", str(run_dir), "--into", str(checkout / "results" / "quickstart")]) == 0
    report.write_docs(checkout, only=["quickstart"])

    text = block((checkout / "README.md").read_text(), "quickstart")
    result = json.loads((run_dir / "eval.json").read_text())
    assert f"| IB-RAR (quickstart) | {100 * result['clean']:.1f}% | " in text
    assert "| CE only (quickstart-ce) | not run | not run | not run |" in text
    assert ": 16 test images (seed 0), " in text and "1 epoch, " in text


# ---- benchmarks -------------------------------------------------------------------------------------


def test_run_all_writes_one_artifact_per_section_and_renders_results_md(checkout, monkeypatch):
    sys.path.insert(0, str(REPO / "bench"))
    import run_all

    def fake_bench(name):
        def bench(argv):
            print(f"{name} output for {' '.join(argv)}")
        bench.__module__ = name
        return bench

    for name in ("bench_core", "bench_scaling", "bench_train", "bench_fast_path"):
        monkeypatch.setattr(getattr(run_all, name), "main", fake_bench(name))
    run_all.main(["--quick", "--root", str(checkout)])

    artifacts = sorted((checkout / "results" / "bench").glob("*.json"))
    assert [p.stem for p in artifacts] == ["bench_core", "bench_fast_path", "bench_scaling", "bench_train"]
    core = json.loads((checkout / "results" / "bench" / "bench_core.json").read_text())
    assert set(report.BENCH_FIELDS) <= set(core)
    assert core["command"] == "python bench/bench_core.py --width 0.25 --repeats 2"
    assert core["output"] == "bench_core output for --width 0.25 --repeats 2\n"
    text = (checkout / "bench" / "RESULTS.md").read_text()
    titles = re.findall(r"^## (.+)$", text, re.M)
    assert titles[0].startswith("IB-RAR penalty") and titles[-1].startswith("The real training step")
    assert "```\nbench_fast_path output for --batches 2 --rounds 2 --width 0.25\n```" in text
    assert report.check_docs(checkout) == []
