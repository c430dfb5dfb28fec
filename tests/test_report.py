"""`ibrar report`: collecting run artifacts, generating the documented tables from them, and failing on drift."""

from __future__ import annotations

import json
import re
import shutil
import sys
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import numpy as np
import pytest

from conftest import tiny_config
from ibrar import report
from ibrar.cli import main
from ibrar.config import build_config, dump_config
from ibrar.figure_data import Confusion, Features, save_confusion, save_features
from ibrar.report.collect import FIGURE_INPUTS
from ibrar.run_files import PARTIAL_EVAL_FILE

REPO = Path(__file__).resolve().parent.parent
DOCS = ("README.md", "docs/reproduction.md", "bench/RESULTS.md", "docs/profiles.md")
LINF = ["fgsm", "pgd10", "fab", "nifgsm", "autoattack"]


def fake_run(folder: Path, name: str, clean: float, attacks: dict[str, float], worst_case: float | None = None,
             linf: list[str] | None = LINF, minutes: float = 40.0, commit: str = "0123456789abcdef",
             started: str = "2026-11-26T01:02:03+00:00", n: int = 1000, extra: tuple[str, ...] = (),
             eval_extra: dict | None = None) -> Path:
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
    result.update(eval_extra or {})
    (run_dir / "eval.json").write_text(json.dumps(result, indent=2))
    for file in extra:
        (run_dir / file).write_bytes(b"not a real checkpoint")
    return run_dir


@pytest.fixture
def checkout(tmp_path) -> Path:
    """A copy of the repository's docs with an empty results/ folder, their tables rendered from it (so the
    tests do not depend on which runs have been committed so far)."""
    for doc in DOCS:
        (tmp_path / doc).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / doc, tmp_path / doc)
    (tmp_path / "results").mkdir()
    report.write_docs(tmp_path)
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
            top = path.relative_to(results).parts[0]
            if top == "bench":
                allowed = path.suffix == ".json"
            elif top == "gpu-check":  # the GPU kit's check stage: check.md/json, stage.json, its JUnit report
                allowed = path.suffix in (".json", ".md") or path.name == "cuda-tests.xml"
            elif top.endswith("-partial"):  # a paper-scale row a lease ran out on: its evaluation piece and log
                allowed = path.name in (*report.ARTIFACTS, PARTIAL_EVAL_FILE, "stage.log")
            else:
                allowed = path.name in (*report.ARTIFACTS, *FIGURE_INPUTS)
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

    # no bench runs here, and the profiles' table comes from the code, not from results/
    assert {p.relative_to(checkout).as_posix() for p in written} == set(DOCS) - {"bench/RESULTS.md", "docs/profiles.md"}
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


def test_table2_is_table1s_comparison_on_resnet18_without_the_papers_rows(checkout):
    """The paper's Table 2 is an image: our pair is shown with its difference, and no paper row."""
    results = checkout / "results"
    fake_run(results / "table2-cpu", "resnet18-cifar10-pgd_at", 36.1, TABLE1_PGD_AT, worst_case=19.9)
    fake_run(results / "table2-cpu", "resnet18-cifar10-pgd_at-ibrar", 42.6, TABLE1_PGD_AT_IBRAR, worst_case=19.6)
    text = report.table2_tables(results, checkout)
    assert text.startswith("**PGD-AT, CIFAR-10 with ResNet18**")
    assert "| PGD-AT (ours, cpu) | 36.10 | 24.80 | 18.00 | 26.10 | 21.90 | 27.20 | 21.10 | 19.90 |" in text
    assert "| difference | +6.50 | +1.10 | −0.50 | +0.90 | +0.20 | +0.70 | −0.50 | −0.30 |" in text
    assert "(paper)" not in text
    assert "**MART, CIFAR-100 with WRN-28-10**: not run" in text
    assert "`results/table2-cpu/`" in text and "table1-cpu" not in text
    assert report.table1_tables(results, checkout).startswith("**PGD-AT, CIFAR-10 with VGG16**: not run")


def test_an_eval_json_without_threat_models_shows_no_linf_worst_case(checkout):
    results = checkout / "results"
    # written before the worst case was split by threat model: its worst_case may include CW-L2
    fake_run(results / "table1-cpu", "vgg16-cifar10-pgd_at", 36.1, TABLE1_PGD_AT, linf=None)
    text = report.table1_tables(results, checkout)
    assert "| PGD-AT (ours, cpu) | 36.10 | 24.80 | 18.00 | 26.10 | 21.90 | 27.20 | 21.10 | - |" in text
    assert "| PGD-AT + IB-RAR (ours, cpu) | not run |" in text
    assert "without `worst_cases`" in text


def test_table1_at_paper_scale_reads_the_gpu_kits_pairs(checkout):
    results = checkout / "results"
    assert report.table1_paper_tables(results, checkout).startswith(
        "**PGD-AT, CIFAR-10 with VGG16**: not run (no eval.json in `results/table1-paper/vgg16-cifar10-pgd_at/`")
    fake_run(results / "table1-paper", "vgg16-cifar10-pgd_at", 76.0, TABLE1_PGD_AT, n=10000)
    fake_run(results / "table1-paper", "vgg16-cifar10-pgd_at-ibrar", 77.0, TABLE1_PGD_AT_IBRAR, n=10000)
    text = report.table1_paper_tables(results, checkout)
    assert "| PGD-AT (ours, paper) | 76.00 | 24.80 | 18.00 | 26.10 | 21.90 | 27.20 | 21.10 |" in text
    assert "| PGD-AT (paper) | 75.02 | 42.45 | 37.80 | 47.32 | 41.03 | 47.59 | - | - |" in text
    assert "`results/table1-paper/`" in text and "results/table1-cpu" not in text
    # a run a lease ran out on after the whole-test-set piece: shown apart, beside the paper's row
    partial = partial_run(results / "table1-paper-partial", "vgg16-cifar10-trades-ibrar", 60)
    (partial / "eval-full.json").write_text(json.dumps({"n": 10000, "seed": 0, "clean": 0.80, "attacks": [
        {"name": a, "accuracy": v / 100} for a, v in TABLE1_PGD_AT_IBRAR.items() if a != "autoattack"]}))
    text = report.table1_paper_tables(results, checkout)
    assert "Not finished when the lease ended, so not Table 1's runs" in text
    assert ("| vgg16-cifar10-trades-ibrar | 60 of 60 | 110.0 | 6.0 | 41.0 | 80.0 / 25.9 / 17.5 / 27.0 / 22.1 / 27.9 | "
            "80.63 / 44.13 / 41.81 / 51.45 / 43.63 / 51.69 |") in text


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


def test_table4_gives_each_run_a_masking_verdict_from_its_eval_json(checkout):
    results = checkout / "results"
    fake_run(results / "table4-paper", "vgg16-1-ce", 90.0, {"pgd10": 0.1, "nifgsm": 0.2, "fgsm": 11.0,
                                                            "autoattack": 0.0})
    fake_run(results / "table4-paper", "vgg16-6-ibrar", 89.0, {"pgd10": 30.0, "nifgsm": 31.0, "fgsm": 50.0,
                                                               "autoattack": 1.0},
             eval_extra={"warnings": ["AutoAttack breaks 97% of the examples pgd10 leaves robust"]})
    text = report.table4_table(results, checkout, "paper")
    assert ("| `vgg16-1-ce` | no robustness to mask | PGD-10 0.1% → AutoAttack 0.0% on the same 1,000 test images |"
            in text)
    assert "| `vgg16-6-ibrar` | signs of gradient masking | PGD-10 30.0% → AutoAttack 1.0% on the same 1,000" in text


def test_tables_without_artifacts_say_not_run(checkout):
    results = checkout / "results"
    assert report.table4_table(results, checkout) == "Table 4: not run (no eval.json in `results/table4-cpu/`)."
    assert report.quickstart_table(results, checkout).startswith("The quickstart pair: not run")
    assert report.bench_sections(results, checkout).startswith("Benchmarks: not run")


# ---- the experiments of issue 15: scale study, Table 3, Table 6, Figure 2 ----------------------------

REFERENCE_AA = {"implementation": "pyautoattack", "package_version": "0.2.0", "version": "standard", "norm": "Linf",
                "eps": 8 / 255, "seed": 0, "n_target_classes": 9, "budget": {"n_iter": 100, "n_queries": 5000},
                "standard_budget": True, "batch_size": 250, "warnings": [],
                "stages": {"clean": 0.6, "apgd-ce": 0.01, "apgd-t": 0.0, "fab-t": 0.0, "square": 0.0}}
SCALE_ATTACKS = {"pgd10": 0.0, "nifgsm": 1.0, "fgsm": 3.0, "autoattack": 0.0}
STEPS = (1, 5, 10, 20, 50)


def curves(start: float) -> dict:
    """eval.json's attack-steps curves (fractions), falling with the steps."""
    return {"curves": {family: {str(s): round(start / s, 4) for s in STEPS} for family in ("pgd", "cw", "nifgsm")}}


def test_scale_study_has_a_table_per_axis_with_the_seed_spread_and_the_papers_rows(checkout):
    results = checkout / "results"
    for seed, (clean, pgd) in enumerate(((60.0, 0.0), (62.0, 0.2))):
        fake_run(results / "scale-cpu", f"1-ce-width0.25-seed{seed}", clean, {**SCALE_ATTACKS, "pgd10": pgd},
                 eval_extra={"seed": seed, "autoattack": {**REFERENCE_AA, "seed": seed}})  # as `reproduce` does
    fake_run(results / "scale-cpu", "6-ibrar-width0.5-seed0", 65.0,
             {"pgd10": 5.0, "nifgsm": 6.0, "fgsm": 20.0, "autoattack": 0.5}, eval_extra={"autoattack": REFERENCE_AA})
    fake_run(results / "scale-cpu", "1-ce-width1.0", 70.0, {"pgd10": 0.0, "nifgsm": 0.5, "fgsm": 5.0,
                                                            "autoattack": 0.0}, eval_extra={"autoattack": REFERENCE_AA})
    text = report.scale_tables(results, checkout)

    width, length = text.split("**Training length")
    assert width.startswith("**Width (10,000 images, 10 epochs)**")
    assert "| row, setting | seeds | Natural | PGD-10 | NI-FGSM | FGSM | AutoAttack |" in width
    assert "| (1) CE only, width 0.25 | 2 | 61.0 ± 1.4 | 0.1 ± 0.1 | 1.0 ± 0.0 | 3.0 ± 0.0 | 0.0 ± 0.0 |" in width
    assert "| (6) IB-RAR, width 0.5 | 1 of 2 | 65.0 | 5.0 | 6.0 | 20.0 | 0.5 |" in width
    # a costly point has one seed and keeps its plain name beside the two-seed cheap points
    assert "| (1) CE only, width 1.0 | 1 | 70.0 | 0.0 | 0.5 | 5.0 | 0.0 |" in width
    assert "| (2) IB loss, width 0.5 | 0 of 2 | not run | not run | not run | not run | not run |" in width
    assert "| (6) IB-RAR, paper (width 1, 50,000 images, 60 epochs) | - | 91.50 | 35.86 | 37.44 | 55.92 | - |" in width
    # one setting line for the reference, and one subset line, each naming both evaluation seeds once
    assert "AutoAttack is the reference implementation: `pyautoattack` 0.2.0 (standard version, seeds 0 and 1, " \
           "each run its own, 9 target classes)." in width
    assert ": 1,000 test images (seeds 0 and 1, each run its own), " in width
    assert "Source: 4 runs in `results/scale-cpu/`" in width
    assert length.startswith(" (width 0.25, all 50,000 images)**: not run (no eval.json in "
                             "`results/scale-cpu/1-ce-epochs10/` or ")
    assert report.source_line([results / "scale-cpu" / "1-ce-width1.0"], checkout) not in length


def test_an_autoattack_number_not_from_the_reference_and_the_checks_warnings_are_stated(checkout):
    results = checkout / "results"
    warned = {**REFERENCE_AA, "warnings": ["Square found adversarial examples the white-box attacks missed"]}
    fake_run(results / "scale-cpu", "1-ce-epochs10", 70.0, SCALE_ATTACKS, eval_extra={"autoattack": warned})
    fake_run(results / "scale-cpu", "6-ibrar-epochs10", 70.0, SCALE_ATTACKS,
             eval_extra={"warnings": ["PGD accuracy does not fall with more steps"]})
    text = report.scale_tables(results, checkout)
    assert "**Width (10,000 images, 10 epochs)**: not run" in text
    assert "AutoAttack of `6-ibrar-epochs10`: from an eval.json without the reference's `autoattack` block " \
           "(ibrar's own re-implementation, evaluated before the reference), not the reference." in text
    assert "Warning of AutoAttack's own checks (`1-ce-epochs10`): Square found adversarial examples the " \
           "white-box attacks missed." in text
    assert "Warning of ibrar's gradient-masking checks (`6-ibrar-epochs10`): PGD accuracy does not fall with " \
           "more steps." in text


def test_scale_study_shows_the_attack_steps_curves_and_autoattacks_stages_where_they_were_run(checkout):
    results = checkout / "results"
    fake_run(results / "scale-cpu", "6-ibrar-epochs60", 85.0, {"pgd10": 9.5, "nifgsm": 11.0, "fgsm": 28.5,
                                                               "autoattack": 0.0},
             eval_extra={"autoattack": REFERENCE_AA, **curves(0.5), "total_seconds": 1200.0})
    fake_run(results / "scale-cpu", "1-ce-epochs60", 83.0, SCALE_ATTACKS, eval_extra={"autoattack": REFERENCE_AA})
    fake_run(results / "scale-cpu", "1-ce-width1.0", 70.0, SCALE_ATTACKS, eval_extra={"autoattack": REFERENCE_AA})
    width, length = report.scale_tables(results, checkout).split("**Training length")
    assert "attack steps" not in width and "stage" not in width  # no width run holds curves
    steps_header = "| run | attack | 1 step | 5 steps | 10 steps | 20 steps | 50 steps |"
    assert "PGD and NI-FGSM at ε = 8/255, CW-L2 unbounded" in length and steps_header in length
    assert "| (6) IB-RAR, 50k images, 60 epochs | PGD | 50.0 | 10.0 | 5.0 | 2.5 | 1.0 |" in length
    assert "| (6) IB-RAR, 50k images, 60 epochs | CW-L2 | 50.0 |" in length
    assert "| (6) IB-RAR, 50k images, 60 epochs | NI-FGSM | 50.0 |" in length
    assert "| run | Natural | APGD-CE | APGD-T | FAB-T | Square |" in length
    assert "| (6) IB-RAR, 50k images, 60 epochs | 60.0 | 1.0 | 0.0 | 0.0 | 0.0 |" in length
    # a run evaluated without curves is in the main table only
    assert "| (1) CE only, 50k images, 60 epochs | 1 |" in length
    assert "| (1) CE only, 50k images, 60 epochs | PGD |" not in length
    assert "| (1) CE only, 50k images, 60 epochs | 60.0 |" not in length
    # the evaluation's minutes count the curves where eval.json times the whole evaluation (older ones do not)
    assert ": 1,000 test images (seed 0), 10.0 and 20.0 min." in length


def test_table6_shows_the_adaptive_attack_and_the_linf_worst_case(checkout):
    results = checkout / "results"
    adaptive = {"pgd10": 2.2, "adaptive10": 1.1, "adaptive100": 0.5, "autoattack": 0.3}
    fake_run(results / "table6-cpu", "plain-ce", 60.6, {"pgd10": 0.2, "adaptive10": 0.1, "adaptive100": 0.0,
                                                        "autoattack": 0.0}, linf=list(adaptive))
    fake_run(results / "table6-cpu", "plain-ibrar", 61.6, adaptive, linf=list(adaptive), worst_case=0.2)
    text = report.table6_table(results, checkout)

    assert "| network | Natural | PGD-10 | PGD_AD-10 | PGD_AD-100 | AutoAttack | L∞ worst case |" in text
    assert "| Plain (CE) (ours, cpu) | 60.6 | 0.2 | 0.1 | 0.0 | 0.0 | 0.0 |" in text
    assert "| Plain (IB-RAR) (ours, cpu) | 61.6 | 2.2 | 1.1 | 0.5 | 0.3 | 0.2 |" in text
    assert "| PGD-AT (IB-RAR) (ours, cpu) | not run | not run | not run | not run | not run | not run |" in text
    assert "(paper)" not in text and "The paper's Table 6 is an image in our copy" in text  # so it says why
    assert "(ε = 8/255: pgd10, adaptive10, adaptive100, autoattack)." in text
    assert text.endswith(report.source_line([results / "table6-cpu" / n for n in ("plain-ce", "plain-ibrar")],
                                            checkout))


def test_figure2_puts_clean_accuracy_beside_the_papers_and_tabulates_the_step_curves(checkout):
    results = checkout / "results"
    fake_run(results / "fig2-cpu", "ce", 60.6, {"pgd10": 0.2, "cw": 5.0, "nifgsm": 1.0, "autoattack": 0.0},
             eval_extra=curves(0.3))
    fake_run(results / "fig2-cpu", "ibrar-rob", 62.0, {"pgd10": 1.5, "cw": 7.0, "nifgsm": 2.5, "autoattack": 0.1},
             eval_extra=curves(0.5))
    text = report.fig2_tables(results, checkout)

    assert "| network | Natural | paper Natural | PGD-10 | CW-L2 | NI-FGSM | AutoAttack |" in text
    assert "| CE | 60.6 | 89.88 | 0.2 | 5.0 | 1.0 | 0.0 |" in text
    assert "| VIB | not run | 90.52 | not run | not run | not run | not run |" in text
    assert "| IB-RAR(rob) | 62.0 | 91.33 | 1.5 | 7.0 | 2.5 | 0.1 |" in text
    assert "Median L2 size of the successful CW-L2 perturbations: `ce` 0.561, `ibrar-rob` 0.562." in text
    titles = re.findall(r"^\*\*(.+): accuracy by number of attack steps\*\*$", text, re.M)
    assert titles == ["PGD", "CW-L2", "NI-FGSM"]
    assert text.count("| network | 1 step | 5 steps | 10 steps | 20 steps | 50 steps |") == 3
    assert "| IB-RAR(rob) | 50.0 | 10.0 | 5.0 | 2.5 | 1.0 |" in text
    assert text.count("Source: `ce`, `ibrar-rob` in `results/fig2-cpu/`") == 2  # the accuracies and the curves


def test_figure2_at_paper_scale_has_the_tables_of_each_optimizer_the_gpu_kit_trained(checkout):
    results = checkout / "results"
    assert report.fig2_paper_tables(results, checkout) == "Figure 2: not run (no eval.json in `results/fig2-paper/`)."
    for name, pgd in (("ce-authors-optim", 0.1), ("ibrar-rob-authors-optim", 20.0), ("hbar", 4.0)):
        fake_run(results / "fig2-paper", name, 90.0, {"pgd10": pgd, "cw": 5.0, "nifgsm": 1.0, "autoattack": 0.0},
                 eval_extra=curves(pgd / 100), n=10000)
    plain, authors = report.fig2_paper_tables(results, checkout).split("\n\n**Width")
    assert plain.startswith("**Width 0.5, all training images, 2 epochs, SGD momentum 0.9, no weight decay** "
                            "(run folders `<row>`)")
    assert "| HBaR | 90.0 | 91.93 | 4.0 |" in plain and "| CE | not run |" in plain
    assert authors.startswith(" 0.5, all training images, 2 epochs, SGD momentum 0.9, no weight decay** (run folders "
                              "`<row>-authors-optim`)")
    assert "| CE | 90.0 | 89.88 | 0.1 |" in authors and "| IB-RAR(rob) | 90.0 | 91.33 | 20.0 |" in authors
    assert "| IB-RAR(rob) | 20.0 | 4.0 | 2.0 | 1.0 | 0.4 |" in authors  # its PGD steps curve
    assert "| HBaR | not run |" in authors


def test_table6_at_paper_scale_has_a_table_per_optimizer_with_table_1s_run_under_the_paper_texts(checkout):
    results = checkout / "results"
    assert report.table6_paper_table(results, checkout) == "Table 6: not run (no eval.json in `results/table6-paper/`)."
    table6 = {"pgd10": 1.0, "adaptive10": 2.0, "adaptive100": 1.5, "autoattack": 0.5}
    for name in ("plain-ce-authors-optim", "plain-ibrar-authors-optim", "at-ibrar"):
        fake_run(results / "table6-paper", name, 80.0, table6)
    plain, authors = report.table6_paper_table(results, checkout).split("\n\n**Width")
    assert "(run folders `<row>`)" in plain and "(run folders `<row>-authors-optim`)" in authors
    assert "| PGD-AT (IB-RAR) (ours, paper) | 80.0 | 1.0 | 2.0 | 1.5 | 0.5 | 0.5 |" in plain
    assert "| Plain (IB-RAR) (ours, paper) | 80.0 | 1.0 | 2.0 | 1.5 | 0.5 | 0.5 |" in authors
    assert "Plain (CE) (ours, paper) | 80" not in plain and "PGD-AT (IB-RAR) (ours, paper) | 80" not in authors


def test_table6_views_only_its_own_networks_evaluated_with_its_attacks_on_a_subset(tmp_path):
    """`collect_table6_view`: Table 4's rows (1) and (6) and Table 1's PGD-AT + IB-RAR run, and only when the
    kit's subset evaluation holds every one of Table 6's attacks (a run evaluated before, or at cpu scale without a
    subset, has no view)."""
    results = tmp_path / "results"
    subset = {"n": 20, "seed": 1, "clean": 0.5, "attacks": [{"name": a, "accuracy": 0.1} for a in
                                                          ("pgd10", "autoattack", "adaptive10", "adaptive100")]}
    for name in ("vgg16-6-ibrar-seed1", "vgg16-2-ib", "vgg16-1-ce"):
        fake_run(results / "table4-paper", name, 80.0, {"pgd10": 1.0},
                 eval_extra={"subsets": {"n20": subset}} if name != "vgg16-1-ce" else None)
    assert report.collect_table6_view(results / "table4-paper" / "vgg16-2-ib", results) is None  # not a network
    assert report.collect_table6_view(results / "table4-paper" / "vgg16-1-ce", results) is None  # no subset
    view = report.collect_table6_view(results / "table4-paper" / "vgg16-6-ibrar-seed1", results)
    assert view == results / "table6-paper" / "plain-ibrar-seed1"
    written = json.loads((view / "eval.json").read_text())
    assert written["n"] == 20 and [a["name"] for a in written["attacks"]] == [a["name"] for a in subset["attacks"]]
    assert "Table 6's view of `table4-paper/vgg16-6-ibrar-seed1`" in written["notes"][-1]
    subset["attacks"].pop()  # no PGD_AD-100: no view
    fake_run(results / "table1-paper", "vgg16-cifar10-pgd_at-ibrar", 50.0, {"pgd10": 1.0},
             eval_extra={"subsets": {"n20": subset}})
    assert report.collect_table6_view(results / "table1-paper" / "vgg16-cifar10-pgd_at-ibrar", results) is None


def test_figure2_without_curves_says_the_curves_did_not_run(checkout):
    results = checkout / "results"
    fake_run(results / "fig2-cpu", "ce", 60.6, {"pgd10": 0.2, "cw": 5.0, "nifgsm": 1.0, "autoattack": 0.0})
    text = report.fig2_tables(results, checkout)
    assert "| CE | 60.6 | 89.88 |" in text
    assert text.endswith("Attack-steps curves: not run (no eval.json in `results/fig2-cpu/` holds `curves`).")


def test_table3_names_the_robust_layers_with_the_experiments_own_procedure(checkout):
    from ibrar.experiments import table3

    results = checkout / "results"
    fake_run(results / "table3-cpu", "ce", 60.6, {"pgd10": 0.2, "autoattack": 0.0})
    fake_run(results / "table3-cpu", "layer-block5", 61.6, {"pgd10": 0.2 + table3.MARGIN_PP, "autoattack": 0.0})
    fake_run(results / "table3-cpu", "layer-fc1", 62.6, {"pgd10": 1.2, "autoattack": 0.0})
    text = report.table3_table(results, checkout)

    assert "| network | Natural | PGD-10 | AutoAttack | PGD-10 − CE only |" in text
    assert "| CE only | 60.6 | 0.2 | 0.0 | - |" in text
    assert "| IB on block5 | 61.6 | 2.2 | 0.0 | +2.0 |" in text
    assert "| IB on fc1 | 62.6 | 1.2 | 0.0 | +1.0 |" in text
    assert "| IB on robust layers | not run | not run | not run | - |" in text
    assert "Robust layers the procedure names (PGD-10 at least 2 points above CE only): block5, from 2 of the 7 " \
           "single-layer networks; the paper names block5, fc1, fc2." in text

    shutil.rmtree(results / "table3-cpu" / "ce")
    text = report.table3_table(results, checkout)
    assert "| CE only | not run | not run | not run | - |" in text
    assert "| IB on block5 | 61.6 | 2.2 | 0.0 | - |" in text
    assert "Robust layers: none can be named yet, since CE only has not been evaluated" in text


def _seeded_run(folder: Path, name: str, seed: int, clean: float) -> None:
    """A fake_run whose config trained `seed` (the ledger and the seed-by-seed line pair runs by that seed)."""
    run_dir = fake_run(folder, name, clean, {"pgd10": 0.2, "autoattack": 0.0})
    config = build_config(tiny_config(folder, name=name))
    config.seed = seed
    (run_dir / "config.yaml").write_text(dump_config(config))


def test_table3_pairs_each_networks_clean_accuracy_with_ce_only_of_the_same_seed(checkout):
    results = checkout / "results"
    folder = results / "table3-cpu"
    _seeded_run(folder, "ce", 0, 60.0)
    _seeded_run(folder, "ce-seed1", 1, 64.0)
    # named out of seed order: the pairing follows each run's configured seed, not its folder name
    _seeded_run(folder, "layer-fc2", 1, 63.0)
    _seeded_run(folder, "layer-fc2-seed1", 0, 62.5)
    _seeded_run(folder, "layer-block1", 1, 63.5)  # seed 0 not run: one pair, labelled with its seed
    text = report.table3_table(results, checkout)
    assert ("Clean accuracy minus CE only's of the same seed, in points, seed by seed (seeds 0, 1): "
            "IB on block1 (seed 1 only) −0.5 (0 of 1 above); IB on fc2 +2.5, −1.0 (1 of 2 above).") in text

    for run in ("ce", "ce-seed1"):
        shutil.rmtree(folder / run)
    assert "Clean accuracy against CE only of the same seed: no seed evaluated in both yet." in \
        report.table3_table(results, checkout)


def test_the_new_tables_say_not_run_without_artifacts_and_render_into_their_markers(checkout):
    results = checkout / "results"
    expected = {
        "scale-cpu": "Scale study: not run (no eval.json in `results/scale-cpu/`).",
        "table3-cpu": "Table 3: not run (no eval.json in `results/table3-cpu/`).",
        "table6-cpu": "Table 6: not run (no eval.json in `results/table6-cpu/`).",
        "fig2-cpu": "Figure 2: not run (no eval.json in `results/fig2-cpu/`).",
    }
    text = (checkout / "docs" / "reproduction.md").read_text()
    for name, line in expected.items():
        assert next(t for t in report.TABLES if t.name == name).render(results, checkout) == line
        assert block(text, name) == line + "\n"  # the committed docs hold the "not run" text
    fake_run(results / "table6-cpu", "plain-ce", 60.6, {"pgd10": 0.2, "adaptive10": 0.1, "adaptive100": 0.0,
                                                        "autoattack": 0.0})
    drifted = [line for line in report.check_docs(checkout) if not line.startswith("bench/")]  # bench: none here
    assert drifted == [
        "docs/reproduction.md: table 'table6-cpu' differs from results/; run `ibrar report` to regenerate it"]
    report.write_docs(checkout)
    assert "| Plain (CE) (ours, cpu) | 60.6 |" in block((checkout / "docs" / "reproduction.md").read_text(),
                                                       "table6-cpu")


# ---- figures ----------------------------------------------------------------------------------------


def write_info_plane(run: Path) -> None:
    """info_plane.jsonl as the trainer writes it: per iteration, each tapped layer's HSIC with X and with Y."""
    (run / "info_plane.jsonl").write_text("".join(
        json.dumps({"iteration": i, "hsic_x": {"fc1": 1.0 + i, "fc2": 0.5}, "hsic_y": {"fc1": 0.1 * i, "fc2": 0.2}})
        + "\n" for i in range(3)))


def test_figures_are_redrawn_from_the_artifacts_alone(checkout, capsys):
    results = checkout / "results"
    assert set(report.draw_figures(checkout).values()) == {
        "no eval.json in `results/scale-cpu/`",
        "no eval.json in `results/fig2-cpu/` holds `curves`",
        "no eval.json in `results/table1-cpu/`",
        "no run of `vgg16-2-ib` or `vgg16-1-ce` in `results/table4-cpu/` has info_plane.jsonl (a file over 1 MiB "
        "is not collected)",
        "rows (1) and (6) in `results/table4-paper/` need an eval.json and a tsne-features.npz each",
        "row (6) in `results/table4-paper/` needs an eval.json and a confusion-pgd10.json",
        "no run of `vgg16-2-ib` or `vgg16-1-ce` in `results/table4-paper/` has info_plane.jsonl (a file over 1 MiB "
        "is not collected)",
        "no eval.json in `results/fig2-paper/` holds `curves`",
        "no eval.json in `results/table1-paper/`",
        "rows (1) and (6) at 60 epochs in `results/scale-cpu/` need a tsne-features.npz each",
        "row (6) at 60 epochs in `results/scale-cpu/` needs a confusion-pgd10.json",
    }
    assert not (checkout / "docs" / "figures").exists()

    fake_run(results / "scale-cpu", "1-ce-width1.0", 70.0, SCALE_ATTACKS)
    fake_run(results / "fig2-cpu", "ce", 60.6, {"pgd10": 0.2}, eval_extra=curves(0.3))
    fake_run(results / "table1-cpu", "vgg16-cifar10-pgd_at", 36.1, TABLE1_PGD_AT)
    write_info_plane(fake_run(results / "table4-cpu", "vgg16-1-ce", 60.6, SCALE_ATTACKS))
    write_figure_inputs(results / "scale-cpu", ("6-ibrar-epochs60-seed1", "1-ce-epochs60-seed1"), confusion=True)
    assert main(["report", "--figures", "--root", str(checkout)]) == 0

    figures = checkout / "docs" / "figures"
    confusion = "scale-cpu-60epochs-table5-confusion"
    assert sorted(p.name for p in figures.iterdir()) == sorted(
        [f"{figure.name}.{ext}" for figure in report.FIGURES if "-paper-" not in figure.name for ext in ("png", "pdf")]
        + [f"{confusion}.md", *(f"{confusion}-ce-only.{ext}" for ext in ("md", "png", "pdf"))])
    assert all(p.stat().st_size > 0 for p in figures.iterdir())
    assert f"drew {figures / 'scale-cpu-scale-study.png'}" in capsys.readouterr().out
    assert report.check_docs(checkout) == []  # --figures rewrote the tables too; the figures are never checked
    assert main(["report", "--check", "--figures", "--root", str(checkout)]) == 2

def write_figure_inputs(folder: Path, names: tuple[str, ...], confusion: bool) -> list[Path]:
    """Evaluated runs with Figure 3's saved features (and Table 5's counts, with `confusion`), as a run's
    figure_data leaves them."""
    classes = [f"class{c}" for c in range(10)]
    rng = np.random.default_rng(0)
    runs = []
    for name in names:
        run = fake_run(folder, name, 80.0, SCALE_ATTACKS)
        save_features(Features(rng.normal(size=(40, 8)), np.arange(40) % 10, classes, 40, 0), run / "tsne-features.npz")
        if confusion:
            save_confusion(Confusion(np.eye(10, k=1, dtype=np.int64) * 7, classes, 10, 1000, 0),
                           run / "confusion-pgd10.json")
        runs.append(run)
    return runs


def test_the_60_epoch_pairs_figure_3_and_table_5_come_from_the_first_seed_that_saved_them(checkout):
    """The scale study's one setting where IB-RAR holds under the paper's attacks: its t-SNE and where its PGD
    examples land, beside CE only's, from the files saved beside the runs (seed 0's weights are gone)."""
    results = checkout / "results"
    fake_run(results / "scale-cpu", "6-ibrar-epochs60", 85.0, SCALE_ATTACKS)  # seed 0: evaluated, no features
    ibrar, ce = write_figure_inputs(results / "scale-cpu", ("6-ibrar-epochs60-seed1", "1-ce-epochs60-seed1"),
                                    confusion=False)
    assert report.draw_figures(checkout)["scale-cpu-60epochs-table5-confusion"] == (
        "row (6) at 60 epochs in `results/scale-cpu/` needs a confusion-pgd10.json")
    save_confusion(Confusion(np.eye(10, k=1, dtype=np.int64) * 7, [f"class{c}" for c in range(10)], 10, 1000, 0),
                   ibrar / "confusion-pgd10.json")
    drawn = report.draw_figures(checkout)
    figures = checkout / "docs" / "figures"
    assert drawn["scale-cpu-60epochs-fig3-tsne"] == [figures / f"scale-cpu-60epochs-fig3-tsne.{ext}"
                                                     for ext in ("png", "pdf")]
    assert [p.name for p in drawn["scale-cpu-60epochs-table5-confusion"]] == [
        f"scale-cpu-60epochs-table5-confusion.{ext}" for ext in ("md", "png", "pdf")]  # CE only has no counts
    assert "| class0 | class1-7 | - | - | - |" in (figures / "scale-cpu-60epochs-table5-confusion.md").read_text()
    (ce / "tsne-features.npz").unlink()
    assert report.draw_figures(checkout)["scale-cpu-60epochs-fig3-tsne"] == (
        "rows (1) and (6) at 60 epochs in `results/scale-cpu/` need a tsne-features.npz each")


def test_a_leases_figures_are_drawn_per_optimizer_from_the_files_it_brought_back(checkout):
    """The weights stay on the lent GPU: Figure 3 and Table 5 come from the saved features and counts, one figure
    per optimizer (the authors' code's beside the paper text's), a row without them named, not guessed."""
    results = checkout / "results"
    classes = [f"class{c}" for c in range(10)]
    rng = np.random.default_rng(0)
    for variant in ("", "-authors-optim"):
        for row in ("vgg16-1-ce", "vgg16-2-ib", "vgg16-6-ibrar"):
            run = fake_run(results / "table4-paper", f"{row}{variant}", 60.0, SCALE_ATTACKS)
            write_info_plane(run)
            if row != "vgg16-2-ib":
                save_features(Features(rng.normal(size=(40, 8)), np.arange(40) % 10, classes, 40, 0),
                              run / "tsne-features.npz")
        save_confusion(Confusion(np.eye(10, k=1, dtype=np.int64) * 7, classes, 10, 1000, 0),
                       results / "table4-paper" / f"vgg16-6-ibrar{variant}" / "confusion-pgd10.json")
        fake_run(results / "fig2-paper", f"ce{variant}", 60.0, {"pgd10": 0.2}, eval_extra=curves(0.3))
    (results / "table4-paper" / "vgg16-1-ce" / "tsne-features.npz").unlink()  # the plain row (1) lacks them

    drawn = report.draw_figures(checkout)

    figures = checkout / "docs" / "figures"
    assert drawn["table4-paper-fig3-tsne"] == [figures / f"table4-paper-fig3-tsne-authors-optim.{ext}"
                                               for ext in ("png", "pdf")]
    assert [p.name for p in drawn["table4-paper-table5-confusion"]] == [
        f"table4-paper-table5-confusion{variant}.{ext}" for variant in ("", "-authors-optim")
        for ext in ("md", "png", "pdf")]
    table5 = (figures / "table4-paper-table5-confusion-authors-optim.md").read_text()
    assert "| class0 | class1-7 | - | - | - |" in table5
    assert [p.name for p in drawn["fig2-paper-steps"]] == [
        f"fig2-paper-steps{variant}.{ext}" for variant in ("", "-authors-optim") for ext in ("png", "pdf")]
    assert len(drawn["table4-paper-fig5-infoplane"]) == 4
    assert drawn["table1-paper-convergence"] == "no eval.json in `results/table1-paper/`"
    assert all(p.stat().st_size > 0 for files in drawn.values() if isinstance(files, list) for p in files)

    for variant in ("", "-authors-optim"):
        (results / "table4-paper" / f"vgg16-1-ce{variant}" / "tsne-features.npz").unlink(missing_ok=True)
    assert report.draw_figures(checkout)["table4-paper-fig3-tsne"] == (
        "rows (1) and (6) in `results/table4-paper/` need an eval.json and a tsne-features.npz each")


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
    assert sorted(p.name for p in target.iterdir()) == sorted(
        name for name in report.ARTIFACTS if name != "gpu.json")  # a CPU run has no GPU calls to list
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


def test_figure_inputs_are_collected_at_full_width_size(tmp_path):
    """A paper-scale row's fc2 features (500 x 4096 at full width, about 2.4 MB) are over the records' size limit
    and are the only copy once the lease's machine is gone: they are collected whatever their size."""
    run = fake_run(tmp_path / "runs" / "table4-paper", "vgg16-6-ibrar", 88.0, {"pgd10": 17.0})
    rng = np.random.default_rng(0)
    features = Features(np.maximum(rng.normal(size=(500, 4096)), 0), np.arange(500) % 10,
                        [f"class{c}" for c in range(10)], 500, 0)
    size = save_features(features, run / "tsne-features.npz").stat().st_size
    assert size > report.OPTIONAL_SIZE_LIMIT
    target = report.collect_run(run, tmp_path / "results" / "table4-paper")
    assert (target / "tsne-features.npz").read_bytes() == (run / "tsne-features.npz").read_bytes()


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


def test_collect_refuses_a_run_evaluated_before_its_training_finished(tmp_path, capsys):
    run = fake_run(tmp_path / "runs" / "table4-cpu", "vgg16-1-ce", 60.6, {"fgsm": 3.5}, extra=("checkpoint.pt",),
                   eval_extra={"checkpoint": "runs/table4-cpu/vgg16-1-ce/checkpoint.pt"})  # `ibrar eval` mid-run
    code = main(["report", "collect", str(run), "--into", str(tmp_path / "results")])
    err = capsys.readouterr().err
    assert code == 2 and "before training finished" in err and f"ibrar train --resume {run}" in err
    assert not (tmp_path / "results" / "vgg16-1-ce").exists()


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
    clean = Decimal(repr(100 * result["clean"])).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)  # 56.25: 56.3
    assert f"| IB-RAR (quickstart) | {clean}% | " in text
    assert "| CE only (quickstart-ce) | not run | not run | not run |" in text
    assert ": 16 test images (seed 0), " in text and "1 epoch, " in text


def test_a_run_resumed_at_another_commit_names_both_in_its_source_line(tmp_path):
    run = fake_run(tmp_path / "results" / "table4-cpu", "vgg16-1-ce", 60.6, {"fgsm": 3.5},
                   commit="1111111aaaa", started="2026-11-25T23:00:00+00:00")
    meta = json.loads((run / "meta.json").read_text())
    meta["resumed"] = [dict(meta, git_commit="2222222bbbb", started="2026-11-26T00:30:00+00:00")]
    (run / "meta.json").write_text(json.dumps(meta))
    line = report.source_line([run], tmp_path)
    assert "Trained 2026-11-25 to 2026-11-26 at commits `1111111`, `2222222` on " in line


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


def test_run_all_only_reruns_the_named_benchmark_in_its_place(checkout, monkeypatch):
    sys.path.insert(0, str(REPO / "bench"))
    import run_all

    def fake_bench(name, text):
        def bench(argv):
            print(text)
        bench.__module__ = name
        return bench

    for name in ("bench_core", "bench_scaling", "bench_train", "bench_fast_path"):
        monkeypatch.setattr(getattr(run_all, name), "main", fake_bench(name, f"first {name}"))
    run_all.main(["--quick", "--root", str(checkout)])
    monkeypatch.setattr(run_all.bench_scaling, "main", fake_bench("bench_scaling", "second bench_scaling"))
    monkeypatch.setattr(run_all.bench_core, "main", fake_bench("bench_core", "never run"))
    run_all.main(["--quick", "--root", str(checkout), "--only", "bench_scaling"])

    text = (checkout / "bench" / "RESULTS.md").read_text()
    outputs = re.findall(r"^(first|second|never) (bench_\w+)$", text, re.M)
    assert outputs == [("first", "bench_core"), ("second", "bench_scaling"), ("first", "bench_train"),
                       ("first", "bench_fast_path")]
    with pytest.raises(SystemExit):
        run_all.main(["--quick", "--root", str(checkout), "--only", "bench_eval"])  # it needs --checkpoint


def test_the_gpu_kits_results_land_in_the_docs_through_the_report(checkout):
    results = checkout / "results"
    assert "The GPU check: not run yet" in report.gpu_check_section(results, checkout)
    assert "Table 4: not run" in report.table4_paper_table(results, checkout)
    check = results / "gpu-check"
    check.mkdir()
    (check / "check.md").write_text("| setting | PGD-AT | + IB-RAR | IB-RAR adds |\n| fp32 | 80 ms | 82 ms | +2.5% |\n")
    (check / "stage.json").write_text(json.dumps({"device": "NVIDIA H100 80GB HBM3", "torch": "2.11.0+cu130",
                                                  "started_utc": "2026-12-01T10:00:00+00:00", "minutes": 6.5}))
    text = report.gpu_check_section(results, checkout)
    assert text.startswith("`bash bench/gpu/run.sh check` on NVIDIA H100 80GB HBM3, 2.11.0+cu130, started "
                           "2026-12-01T10:00:00+00:00, 6.5 minutes")
    assert "| fp32 | 80 ms | 82 ms | +2.5% |" in text
    fake_run(results / "table4-paper", "vgg16-6-ibrar", 91.0,
             {"pgd10": 30.0, "nifgsm": 31.0, "fgsm": 50.0, "autoattack": 1.0})
    text = report.table4_paper_table(results, checkout)
    assert "| (6) IB loss + mask | 91.0 / 30.0 / 31.0 / 50.0 / 1.0 | 91.50 / 35.86 / 37.44 / 55.92 |" in text
    assert "`results/table4-paper/`" in text
    report.write_docs(checkout)
    assert "NVIDIA H100 80GB HBM3" in (checkout / "bench/RESULTS.md").read_text()


def test_paper_rows_of_each_optimizer_have_their_own_table_and_a_later_seed_joins_its_row(checkout):
    """The GPU kit names its folders `<row>[-authors-optim][-seed<k>]`: a Table 4 per optimizer, headed by the
    setting the configs trained, each row's seeds averaged."""
    results = checkout / "results"
    folder = results / "table4-paper"
    six = {"nifgsm": 31.0, "fgsm": 50.0, "autoattack": 1.0}
    fake_run(folder, "vgg16-6-ibrar", 90.0, {"pgd10": 17.0, **six})
    (folder / "vgg16-6-ibrar" / "config.yaml").write_text(dump_config(build_config(tiny_config(
        folder, name="vgg16-6-ibrar", optim={"momentum": 0.0, "weight_decay": 0.01}))))
    for name, pgd in (("vgg16-6-ibrar-authors-optim", 30.0), ("vgg16-6-ibrar-authors-optim-seed1", 32.0)):
        fake_run(folder, name, 91.0, {"pgd10": pgd, **six})
    text = report.table4_paper_table(results, checkout)
    plain, authors = text.split("\n\n**")[0], text.split("\n\n**")[1]
    assert plain.startswith("**Width 0.5, all training images, 2 epochs, SGD momentum 0, weight decay 0.01** "
                            "(run folders `<row>`)")
    assert "| (6) IB loss + mask | 90.0 / 17.0 / 31.0 / 50.0 / 1.0 | 91.50 / 35.86 / 37.44 / 55.92 |" in plain
    assert authors.startswith("Width 0.5, all training images, 2 epochs, SGD momentum 0.9, no weight decay** "
                              "(run folders `<row>-authors-optim`)")
    assert ("| (6) IB loss + mask | 91.0 ± 0.0 / 31.0 ± 1.4 / 31.0 ± 0.0 / 50.0 ± 0.0 / 1.0 ± 0.0 | 91.50 / 35.86 "
            in authors)
    assert "`vgg16-6-ibrar-authors-optim`, `vgg16-6-ibrar-authors-optim-seed1` in `results/table4-paper/`" in authors
    # a row of one optimizer's second seed that a lease ran out on: the paper's row beside it all the same
    partial_run(results / "table4-paper-partial", "vgg16-1-ce-authors-optim-seed1", 12)
    assert ("| vgg16-1-ce-authors-optim-seed1 | 12 of 60 | 62.0 | 1.2 | 17.0 | not evaluated | 89.99 / 0.10 / 0.18 "
            "/ 11.80 |") in report.table4_paper_table(results, checkout)


def test_the_gpu_kits_merged_evaluation_names_the_reference_autoattack_that_ran_on_its_subset(checkout, monkeypatch):
    """The kit's eval.json: the paper's attacks on the whole test set, the reference AutoAttack on a seeded 1,000
    (its entry and its `autoattack` block from the subset's evaluation): the notes name the reference."""
    monkeypatch.syspath_prepend(str(REPO / "bench" / "gpu"))
    import stages

    run = fake_run(checkout / "results" / "table4-paper", "vgg16-6-ibrar-authors-optim", 91.0,
                   {"pgd10": 30.0, "nifgsm": 31.0, "fgsm": 50.0}, n=10000)
    full = json.loads((run / "eval.json").read_text())
    subset = {"n": 1000, "seed": 0, "clean": 0.9, "autoattack": REFERENCE_AA, "warnings": [],
              "attacks": [{"name": "pgd10", "accuracy": 0.29}, {"name": "autoattack", "accuracy": 0.02}]}
    (run / "eval.json").write_text(json.dumps(stages.merge_evaluations(full, subset, "autoattack")))
    text = report.table4_paper_table(checkout / "results", checkout)
    assert "| (6) IB loss + mask | 91.0 / 30.0 / 31.0 / 50.0 / 2.0 |" in text
    assert "PGD-10 29.0% → AutoAttack 2.0% on the same 1,000 test images" in text
    assert "AutoAttack is the reference implementation: `pyautoattack` 0.2.0 (standard version" in text
    assert "not the reference" not in text
    assert "10,000 test images (seed 0; AutoAttack on a seeded 1,000 of them)" in text


def partial_run(folder: Path, name: str, epochs_done: int) -> Path:
    """A paper-scale row the GPU kit trained part of the way: config, metrics and gpu.json, no eval.json."""
    run_dir = folder / name
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(dump_config(build_config(tiny_config(folder, name=name,
                                                                            train={"epochs": 60}))))
    (run_dir / "metrics.jsonl").write_text("".join(
        json.dumps({"epoch": e, "test_clean_acc": 0.5 + e / 100, "test_pgd10_acc": e / 1000, "seconds": 10.0 + e})
        + "\n" for e in range(1, epochs_done + 1)))
    (run_dir / "gpu.json").write_text(json.dumps({"device": "NVIDIA H200", "source": {"commit": "abcdef0123"},
                                                  "calls": [{"started_utc": "2026-11-26T03:51:30+00:00",
                                                             "minutes": 7.0, "torch": "2.11.0+cu130"}]}))
    return run_dir


def test_partly_trained_paper_rows_are_shown_apart_until_the_row_is_evaluated(checkout):
    results = checkout / "results"
    partial_run(results / "table4-paper-partial", "vgg16-6-ibrar", 19)
    text = report.table4_paper_table(results, checkout)
    assert text.startswith("Table 4: not run")  # the partial row is no Table 4 number
    # last epoch's monitor; median s/epoch; the paper's row beside it
    assert ("| vgg16-6-ibrar | 19 of 60 | 69.0 | 1.9 | 20.0 | not evaluated | 91.50 / 35.86 / 37.44 / 55.92 "
            "| NVIDIA H200 |") in text
    assert "vgg16-6-ibrar: 2026-11-26T03:51:30+00:00, 7.0 min, torch 2.11.0+cu130, commit `abcdef0`" in text
    # trained, and the paper's attacks ran on the whole test set before the lease ended (AutoAttack did not)
    (results / "table4-paper-partial" / "vgg16-6-ibrar" / "eval-full.json").write_text(json.dumps({
        "n": 10000, "seed": 0, "clean": 0.8893, "recovered_from": "stage.log: the table",
        "attacks": [{"name": "pgd10", "accuracy": 0.1734}, {"name": "fgsm", "accuracy": 0.4871}]}))
    text = report.table4_paper_table(results, checkout)
    assert "| 88.9 / 17.3 / - / 48.7 | 91.50 / 35.86 / 37.44 / 55.92 |" in text  # NI-FGSM absent: shown as -
    assert "vgg16-6-ibrar's whole-test-set numbers come from its stage.log: the table." in text
    fake_run(results / "table4-paper", "vgg16-6-ibrar", 91.0, {"pgd10": 30.0, "nifgsm": 31.0, "fgsm": 50.0})
    text = report.table4_paper_table(results, checkout)
    assert "19 of 60" not in text and "Not finished when the lease ended" not in text


def test_the_gpu_check_section_lists_earlier_checks_and_a_separate_fast_path_run(checkout):
    results = checkout / "results"
    check = results / "gpu-check"
    (check / "history").mkdir(parents=True)
    (check / "check.md").write_text("CUDA tests: 30 passed\n")
    (check / "history" / "2026-11-26T035130-check.json").write_text(json.dumps(
        {"device": "NVIDIA H200", "cuda_tests": {"passed": 24, "failures": 1, "failed": ["test_x[fp32]: boom"]}}))
    (check / "fast-path.json").write_text(json.dumps(
        {"command": "python3 bench/bench_fast_path.py --rounds 2", "device": "NVIDIA H200", "torch": "2.11.0",
         "started_utc": "2026-11-26T04:14:12+00:00", "note": "a short run", "output": "fp32 59.0 ms/step\n"}))
    text = report.gpu_check_section(results, checkout)
    assert "- 2026-11-26T035130 on NVIDIA H200: 24 passed, 1 failed (test_x[fp32])" in text
    assert "`python3 bench/bench_fast_path.py --rounds 2` on NVIDIA H200 (torch 2.11.0), started " in text
    assert "```\nfp32 59.0 ms/step\n```" in text


def test_the_quickstarts_printed_reference_is_the_committed_ce_run():
    """`./quickstart.sh` prints the CE-only numbers beside its own; they must be the measured ones."""
    from ibrar.config import load_config

    reference = load_config("configs/quickstart.yaml").eval.reference
    result = json.loads((REPO / "results/quickstart/quickstart-ce/eval.json").read_text())
    measured = {"clean": result["clean"], **{a["name"]: a["accuracy"] for a in result["attacks"]}}
    assert reference.keys() <= measured.keys()
    assert all(abs(reference[k] - measured[k]) < 5e-4 for k in reference)
