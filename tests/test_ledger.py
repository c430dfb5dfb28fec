"""The claims ledger: verdicts computed from generated run folders by the documented rules, at a scale that has
not run, one that ran in part (a GPU lease that ended early) and one that ran; seeds added beside seed 0."""

from __future__ import annotations

import json
import statistics
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest
import yaml

from ibrar import ledger, ledger_comparisons
from ibrar.experiments import paper_numbers
from ibrar.ledger_evidence import (
    DOES_NOT,
    NOT_RUN,
    PAPER_ONLY,
    REPRODUCES,
    UNDECIDED,
    Measure,
    Verdict,
    gain_verdict,
    strongest,
    threshold,
    weakest,
)
from ibrar.report import MARKER

REPO = Path(__file__).resolve().parent.parent
PAPER_SETTING = {"width": 1.0, "subset": None, "epochs": 60, "momentum": 0.0, "decay": 0.01}


def make_run(folder: Path, name: str, config_name: str, seed: int = 0, width: float = 0.25,
             subset: int | None = 10000, epochs: int = 10, momentum: float = 0.9, decay: float = 0.0,
             attacks: dict[str, float] | None = None, clean: float = 60.0, whole_test_set_only: bool = False,
             epochs_done: int | None = None, curve: list[float] | None = None, n: int = 1000) -> Path:
    """A run folder as `ibrar train` / `ibrar eval` (or the GPU kit) leave it: config.yaml, metrics.jsonl, and
    eval.json (or only eval-full.json: the paper's attacks on the whole test set, AutoAttack not run; or neither:
    `attacks` None)."""
    run = folder / name
    run.mkdir(parents=True)
    config = {"name": config_name, "seed": seed, "model": {"name": "vgg16", "width": width},
              "data": {"name": "cifar10", "train_subset": subset, "batch_size": 100, "augment": True},
              "method": {"name": "ce"}, "optim": {"lr": 0.01, "momentum": momentum, "weight_decay": decay},
              "train": {"epochs": epochs, "amp": seed % 2 == 1}}  # amp: not part of the setting
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    curve = curve or [clean / 100] * (epochs if epochs_done is None else epochs_done)
    (run / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e + 1, "test_clean_acc": acc}) + "\n"
                                               for e, acc in enumerate(curve)))
    if attacks is not None:
        result = {"n": n, "seed": seed, "clean": clean / 100,
                  "attacks": [{"name": a, "accuracy": v / 100} for a, v in attacks.items()]}
        (run / ("eval-full.json" if whole_test_set_only else "eval.json")).write_text(json.dumps(result))
    return run


def claim(results: Path, title: str) -> ledger.Claim:
    return next(c for c in ledger.claims(results, results.parent) if c.title.startswith(title))


# ---- the rules -------------------------------------------------------------------------------------------


def test_an_effect_is_there_at_two_points_or_half_the_papers_effect_and_with_every_seed_agreeing():
    assert threshold(35.76) == 2.0 and threshold(1.2) == pytest.approx(0.6) and threshold(None) == 2.0
    assert Measure((2.5, 3.0)).there(2.0)
    assert not Measure((1.9,)).there(2.0)
    assert not Measure((6.0, -0.5)).there(2.0)  # the mean is there, one seed has the opposite sign
    assert not Measure(()).there(2.0)


def test_a_mean_that_reaches_the_bar_with_a_seed_of_the_opposite_sign_says_why_it_is_not_there():
    split = Measure((6.0, -0.5))
    assert gain_verdict(split, None, 2.0) == Verdict(DOES_NOT, (
        "the mean under the paper's attack reaches the threshold (2.0), but not every seed has the paper's sign",))
    assert gain_verdict(Measure((1.0,)), None, 2.0) == Verdict(DOES_NOT)  # below the bar: nothing more to say
    pooled = Measure((3.0, 2.0), signs=(3.0, 4.0, -1.0))  # means over pairs, one pair's seed of the other sign
    assert gain_verdict(Measure((3.0,)), pooled, 2.0) == Verdict(PAPER_ONLY, (
        "the mean under AutoAttack reaches the threshold (2.0), but not every seed has the paper's sign",))


def test_a_claim_takes_its_weakest_comparison_and_a_scale_its_strongest_setting():
    assert weakest([Verdict(REPRODUCES), Verdict(PAPER_ONLY)]).kind == PAPER_ONLY
    assert weakest([Verdict(REPRODUCES), Verdict(NOT_RUN, ("row (5): no run",))]) == \
        Verdict(UNDECIDED, ("row (5): no run",))
    assert weakest([Verdict(NOT_RUN), Verdict(NOT_RUN)]).kind == NOT_RUN
    assert strongest([Verdict(DOES_NOT), Verdict(PAPER_ONLY), Verdict(DOES_NOT)]).kind == PAPER_ONLY
    assert strongest([Verdict(PAPER_ONLY), Verdict(UNDECIDED)]).kind == UNDECIDED
    assert strongest([]).kind == NOT_RUN
    # the reasons of every verdict that ties for the top, each once
    assert strongest([Verdict(UNDECIDED, ("a",)), Verdict(DOES_NOT, ("x",)), Verdict(UNDECIDED, ("b", "a"))]) == \
        Verdict(UNDECIDED, ("a", "b"))


def test_the_abstracts_average_gain_is_table_1s_cifar10_half():
    pairs = [("vgg16-cifar10-pgd_at", "vgg16-cifar10-pgd_at-ibrar"), ("vgg16-cifar10-trades",
             "vgg16-cifar10-trades-ibrar"), ("vgg16-cifar10-mart", "vgg16-cifar10-mart-ibrar")]
    gains = [paper_numbers.TABLE1[ib][c] - paper_numbers.TABLE1[base][c]
             for base, ib in pairs for c in ("PGD", "CW", "FGSM", "FAB", "NIFGSM")]
    assert round(statistics.fmean(gains), 2) == paper_numbers.TABLE1_CIFAR10_AVERAGE_GAIN


# ---- Table 4's headline at paper scale: not run, run in part, run -------------------------------------------


def test_the_headline_at_paper_scale_is_not_run_without_the_gpu_kits_folders(tmp_path):
    results = tmp_path / "results"
    make_run(results / "table4-cpu", "vgg16-1-ce", "cpu-table4-vgg16-1-ce", attacks={"pgd10": 0.1, "autoattack": 0})
    make_run(results / "table4-cpu", "vgg16-6-ibrar", "cpu-table4-vgg16-6-ibrar",
             attacks={"pgd10": 0.3, "autoattack": 0})
    headline = claim(results, "Table 4's headline")
    assert headline.evidence["cpu"].verdict.kind == DOES_NOT
    paper = headline.evidence["paper"].verdict
    assert paper.kind == NOT_RUN
    assert "no run of row (1) or row (6) at paper scale" in paper.reasons[0]
    assert "bash bench/gpu/run.sh table4-1" in paper.reasons[0]


def test_a_partial_paper_scale_row_leaves_the_headline_undecided_and_says_what_is_missing(tmp_path):
    results = tmp_path / "results"
    partial = results / "table4-paper-partial"
    make_run(partial, "vgg16-6-ibrar", "table4-vgg16-6-ibrar", **PAPER_SETTING, attacks={"pgd10": 17.3},
             whole_test_set_only=True, n=10000)
    make_run(partial, "vgg16-1-ce", "table4-vgg16-1-ce", **PAPER_SETTING, epochs_done=27)
    evidence = claim(results, "Table 4's headline").evidence["paper"]
    assert evidence.verdict == Verdict(UNDECIDED, ("row (1), CE only: trained 27 of 60 epochs, not evaluated",
                                                   "row (6), IB-RAR: AutoAttack not run"))
    (line,) = evidence.lines
    assert "`results/table4-paper-partial/`" in line.label and "partial: not every run finished" in line.label
    assert "10,000 test images" in line.label
    assert "PGD-10 17.3 vs not evaluated" in line.measured


@pytest.mark.parametrize(("autoattack", "verdict"), [((14.0, 0.0), REPRODUCES), ((0.0, 0.0), PAPER_ONLY)])
def test_finished_paper_scale_rows_decide_the_headline_under_pgd10_and_autoattack(tmp_path, autoattack, verdict):
    """The GPU kit's folders with an optimizer suffix: the config says the row, the setting pairs them."""
    results = tmp_path / "results"
    folder = results / "table4-paper"
    for row, pgd, aa in (("6-ibrar", 30.0, autoattack[0]), ("1-ce", 0.1, autoattack[1])):
        make_run(folder, f"vgg16-{row}-authors-optim", f"table4-vgg16-{row}", **PAPER_SETTING,
                 attacks={"pgd10": pgd, "autoattack": aa}, n=10000)
    make_run(results / "table4-paper-partial", "vgg16-1-ce", "table4-vgg16-1-ce", **PAPER_SETTING, epochs_done=27)
    evidence = claim(results, "Table 4's headline").evidence["paper"]
    assert evidence.verdict.kind == verdict
    (line,) = evidence.lines  # the finished row (1) supersedes the partial copy of the same setting and seed
    assert "`results/table4-paper/`" in line.label and "partial" not in line.label
    assert "PGD-10 30.0 vs 0.1 (+29.9)" in line.measured


def test_a_setting_that_lacks_a_row_of_the_claim_is_undecided_not_judged_on_the_comparison_it_has(tmp_path):
    """The mask claim needs (6) − (2) and (5) − (1): a setting without row (5) cannot reproduce it."""
    results = tmp_path / "results"
    folder = results / "table4-paper"
    for row, pgd in (("1-ce", 0.1), ("2-ib", 12.0), ("6-ibrar", 36.0)):
        make_run(folder, f"vgg16-{row}", f"table4-vgg16-{row}", **PAPER_SETTING,
                 attacks={"pgd10": pgd, "autoattack": pgd / 2})
    evidence = claim(results, "The mask adds robustness").evidence["paper"]
    assert evidence.verdict == Verdict(UNDECIDED, ("row (5) − row (1): row (5) not run in this setting",))
    assert "row (6) − row (2) (1 seed (0)): PGD-10 36.0 vs 12.0" in evidence.lines[0].measured
    # a comparison that fails decides the claim whatever is missing
    (folder / "vgg16-6-ibrar" / "eval.json").write_text(json.dumps(
        {"n": 1000, "seed": 0, "clean": 0.6, "attacks": [{"name": "pgd10", "accuracy": 0.12},
                                                         {"name": "autoattack", "accuracy": 0.06}]}))
    assert claim(results, "The mask adds robustness").evidence["paper"].verdict.kind == DOES_NOT


def test_figure2_at_paper_scale_takes_the_strongest_optimizer_of_the_gpu_kits_folders(tmp_path):
    """Figure 2's networks of each optimizer the kit trained (`<run>` and `<run>-authors-optim`): compared within
    one optimizer only, each pair listed, the strongest deciding."""
    folder = tmp_path / "results" / "fig2-paper"
    for variant, ibrar, aa in (("", 5.0, 0.0), ("-authors-optim", 30.0, 12.0)):
        make_run(folder, f"ibrar-rob{variant}", "table4-vgg16-6-ibrar", **PAPER_SETTING,
                 attacks={"pgd10": ibrar, "autoattack": aa}, n=10000)
        for baseline in ("hbar", "vib"):
            make_run(folder, f"{baseline}{variant}", f"fig2-{baseline}", **PAPER_SETTING,
                     attacks={"pgd10": 4.0, "autoattack": 0.0}, n=10000)
    evidence = claim(tmp_path / "results", "IB-RAR above HBaR and VIB").evidence["paper"]
    assert evidence.verdict.kind == REPRODUCES
    assert [line.verdict.kind for line in evidence.lines] == [DOES_NOT, DOES_NOT, REPRODUCES, REPRODUCES]
    assert "IB-RAR(rob) − HBaR (`results/fig2-paper/`;" in evidence.lines[0].label
    assert "(`results/fig2-paper/`, run folders `<run>-authors-optim`;" in evidence.lines[2].label
    assert "PGD-10 30.0 vs 4.0 (+26.0); AutoAttack 12.0 vs 0.0 (+12.0)" in evidence.lines[2].measured


def test_rows_of_different_optimizers_are_separate_settings_and_never_paired(tmp_path):
    results = tmp_path / "results"
    folder = results / "table4-paper"
    make_run(folder, "vgg16-6-ibrar", "table4-vgg16-6-ibrar", **PAPER_SETTING, attacks={"pgd10": 30, "autoattack": 9})
    other = {**PAPER_SETTING, "momentum": 0.9, "decay": 0.0}
    make_run(folder, "vgg16-1-ce-momentum", "table4-vgg16-1-ce", **other, attacks={"pgd10": 0.1, "autoattack": 0})
    evidence = claim(results, "Table 4's headline").evidence["paper"]
    assert evidence.verdict.kind == NOT_RUN  # no setting ran both rows
    assert "no setting at paper scale ran both rows" in evidence.verdict.reasons[0]


def test_rows_of_different_profiles_are_separate_settings_named_by_their_profile(tmp_path):
    """The authors' code's profile masks and measures HSIC by its own rules: its row (6) is not the paper's."""
    results = tmp_path / "results"
    folder = results / "table4-paper"
    make_run(folder, "vgg16-1-ce", "table4-vgg16-1-ce", **PAPER_SETTING, attacks={"pgd10": 0.1, "autoattack": 0})
    official = make_run(folder, "vgg16-6-ibrar", "table4-vgg16-6-ibrar", **PAPER_SETTING,
                        attacks={"pgd10": 30.0, "autoattack": 9.0})
    config = yaml.safe_load((official / "config.yaml").read_text())
    (official / "config.yaml").write_text(yaml.safe_dump({**config, "profile": "official"}))
    evidence = claim(results, "Table 4's headline").evidence["paper"]
    assert evidence.verdict.kind == NOT_RUN and "no setting at paper scale ran both rows" in evidence.verdict.reasons[0]
    make_run(folder, "vgg16-1-ce-official", "table4-vgg16-1-ce", seed=0, **PAPER_SETTING,
             attacks={"pgd10": 0.1, "autoattack": 0})
    ce = folder / "vgg16-1-ce-official" / "config.yaml"
    ce.write_text(yaml.safe_dump({**yaml.safe_load(ce.read_text()), "profile": "official"}))
    (line,) = claim(results, "Table 4's headline").evidence["paper"].lines
    assert line.label.startswith("width 1, all training images, 60 epochs, SGD momentum 0, weight decay 0.01, "
                                 "profile official (")


def test_the_cpu_headline_takes_its_strongest_setting_and_the_scale_studys_seeds(tmp_path):
    results = tmp_path / "results"
    for seed, (ce, ib) in enumerate(((0.1, 0.3), (0.1, 0.2))):
        suffix = f"-seed{seed}"
        make_run(results / "scale-cpu", f"1-ce-width0.25{suffix}", "cpu-table4-vgg16-1-ce", seed=seed,
                 attacks={"pgd10": ce, "autoattack": 0.0})
        make_run(results / "scale-cpu", f"6-ibrar-width0.25{suffix}", "cpu-table4-vgg16-6-ibrar", seed=seed,
                 attacks={"pgd10": ib, "autoattack": 0.0})
    # Table 4's own copy of seed 0: the same setting and seed, counted once
    make_run(results / "table4-cpu", "vgg16-1-ce", "cpu-table4-vgg16-1-ce", attacks={"pgd10": 0.1, "autoattack": 0})
    for row, pgd in (("1-ce", 0.0), ("6-ibrar", 9.5)):
        make_run(results / "scale-cpu", f"{row}-epochs60", f"cpu-table4-vgg16-{row}", subset=None, epochs=60,
                 attacks={"pgd10": pgd, "autoattack": 0.0})
    evidence = claim(results, "Table 4's headline").evidence["cpu"]
    assert evidence.verdict.kind == PAPER_ONLY
    short, long = evidence.lines
    assert "width 0.25, 10,000 training images, 10 epochs" in short.label and short.verdict.kind == DOES_NOT
    # 0.25 and 0.15 round up, as the decimals they are
    assert "(2 seeds (0, 1))" in short.measured and "PGD-10 0.3 ± 0.1 vs 0.1 ± 0.0 (+0.2 ± 0.1)" in short.measured
    assert "all training images, 60 epochs" in long.label and long.verdict.kind == PAPER_ONLY


def test_a_cpu_verdict_held_by_several_settings_names_each_of_them(tmp_path):
    """Two training lengths each still short of row (2)'s seed 2: the headline names both, not the first alone."""
    results = tmp_path / "results"
    for epochs in (10, 60):
        for seed in (0, 1, 2):
            suffix = "" if seed == 0 else f"-seed{seed}"
            make_run(results / "scale-cpu", f"1-ce-epochs{epochs}{suffix}", "cpu-table4-vgg16-1-ce", seed=seed,
                     subset=None, epochs=epochs, attacks={"pgd10": 0.0, "autoattack": 0.0})
            if seed < 2:
                make_run(results / "scale-cpu", f"2-ib-epochs{epochs}{suffix}", "cpu-table4-vgg16-2-ib", seed=seed,
                         subset=None, epochs=epochs, attacks={"pgd10": 8.0, "autoattack": 0.0})
    evidence = claim(results, "The IB loss alone").evidence["cpu"]
    assert evidence.verdict.kind == UNDECIDED
    assert evidence.scope == "in all 2 settings"
    make_run(results / "table4-cpu", "vgg16-1-ce", "cpu-table4-vgg16-1-ce", attacks={"pgd10": 0.1, "autoattack": 0})
    make_run(results / "table4-cpu", "vgg16-2-ib", "cpu-table4-vgg16-2-ib", attacks={"pgd10": 0.1, "autoattack": 0})
    # the 60-epoch row (2) seed 1 not yet evaluated: that setting's reason joins the 10-epoch one's
    (results / "scale-cpu" / "2-ib-epochs60-seed1" / "eval.json").unlink()
    evidence = claim(results, "The IB loss alone").evidence["cpu"]
    assert [line.verdict.kind for line in evidence.lines] == [DOES_NOT, UNDECIDED, UNDECIDED]
    assert evidence.verdict.reasons == ("row (2), IB loss seed 2: no run",
                                        "row (2), IB loss seed 1: trained 60 of 60 epochs, not evaluated")
    assert evidence.scope == ("in width 0.25, all training images, 10 epochs, SGD momentum 0.9, no weight decay and "
                              "width 0.25, all training images, 60 epochs, SGD momentum 0.9, no weight decay")


# ---- Table 1: seeds beside seed 0, a pair still training ------------------------------------------------------


def table1_pair(results: Path, method: str, seed: int, base: float, ib: float | None, aa: tuple[float, float]):
    suffix = "" if seed == 0 else f"-seed{seed}"
    five = {"pgd10": 25.0, "cw": 20.0, "fgsm": 26.0, "fab": 22.0, "nifgsm": 27.0}
    make_run(results / "table1-cpu", f"vgg16-cifar10-{method}{suffix}", f"cpu-table1-{method}", seed=seed,
             clean=base, attacks={**five, "autoattack": aa[0]}, decay=5e-4)
    if ib is not None:
        make_run(results / "table1-cpu", f"vgg16-cifar10-{method}-ibrar{suffix}", f"cpu-table1-{method}-ibrar",
                 seed=seed, clean=ib, attacks={**{a: v + 0.5 for a, v in five.items()}, "autoattack": aa[1]},
                 decay=5e-4)


def test_the_clean_gain_is_the_mean_over_the_seeds_present_and_the_pairs_that_ran(tmp_path):
    results = tmp_path / "results"
    for seed, (base, ib) in enumerate(((38.4, 44.1), (39.0, 43.0), (37.0, 44.0))):
        table1_pair(results, "pgd_at", seed, base, ib, (21.8, 21.4))
    table1_pair(results, "trades", 0, 40.1, 44.3, (19.8, 19.0))
    table1_pair(results, "mart", 0, 23.9, None, (13.4, 0.0))  # MART + IB-RAR still training
    evidence = claim(results, "The clean-accuracy gain").evidence["cpu"]
    pgd_at, trades, mart = evidence.lines
    gains = [44.1 - 38.4, 43.0 - 39.0, 44.0 - 37.0]
    assert "3 seeds (0, 1, 2)" in pgd_at.label and pgd_at.seeds == 3
    assert (f"(+{statistics.fmean(gains):.1f} ± {statistics.stdev(gains):.1f})") in pgd_at.measured
    assert "1 seed (0)" in trades.label
    assert mart.verdict.kind == NOT_RUN and "`vgg16-cifar10-mart-ibrar` not run at this scale yet" in mart.measured
    assert evidence.verdict.kind == REPRODUCES
    pooled = statistics.fmean([statistics.fmean(gains), 44.3 - 40.1])
    assert any(f"mean over PGD-AT, TRADES: +{pooled:.1f}" in r for r in evidence.verdict.reasons)
    assert any("not run at cpu scale yet: MART" in r for r in evidence.verdict.reasons)


def test_a_seed_one_row_has_not_evaluated_leaves_the_pair_undecided_not_judged_on_the_seeds_left(tmp_path):
    results = tmp_path / "results"
    for seed, (base, ib) in enumerate(((38.4, 44.1), (39.0, 43.0))):
        table1_pair(results, "pgd_at", seed, base, ib, (21.8, 21.4))
    (results / "table1-cpu" / "vgg16-cifar10-pgd_at-ibrar-seed1" / "eval.json").unlink()  # seed 1 still training
    (pgd_at, *_) = claim(results, "The clean-accuracy gain").evidence["cpu"].lines
    assert pgd_at.verdict.kind == UNDECIDED and "1 seed (0)" in pgd_at.label
    assert any("seed 1" in reason for reason in pgd_at.verdict.reasons)


def test_the_average_gain_appears_under_the_paper_attacks_only_when_autoattack_takes_it_away(tmp_path):
    results = tmp_path / "results"
    table1_pair(results, "pgd_at", 0, 38.4, 44.1, (21.8, 21.4))
    # the paper's own gain over PGD-AT alone is 3.88, so the threshold is 1.94; ours is 0.5 on every attack
    assert claim(results, "IB-RAR on top of").evidence["cpu"].verdict.kind == DOES_NOT
    for name in ("vgg16-cifar10-pgd_at-ibrar",):
        path = results / "table1-cpu" / name / "eval.json"
        result = json.loads(path.read_text())
        result["attacks"] = [{**a, "accuracy": a["accuracy"] + (0.03 if a["name"] != "autoattack" else 0)}
                             for a in result["attacks"]]
        path.write_text(json.dumps(result))
    assert claim(results, "IB-RAR on top of").evidence["cpu"].verdict.kind == PAPER_ONLY


def test_table2s_resnet18_pairs_join_the_average_gain_at_the_papers_stated_average(tmp_path):
    """Table 2's per-pair numbers are an image: a ResNet18 pair that ran is held to the paper's +2.66 over Tables
    1 and 2, and joins the pooled mean; the clean-accuracy claim (Table 1's text) leaves it out."""
    results = tmp_path / "results"
    table1_pair(results, "pgd_at", 0, 38.4, 44.1, (21.8, 21.4))
    before = claim(results, "IB-RAR on top of")
    assert "VGG16 on CIFAR-10 only" in before.note and len(before.evidence["cpu"].lines) == 3
    five = {"pgd10": 25.0, "cw": 20.0, "fgsm": 26.0, "fab": 22.0, "nifgsm": 27.0}
    make_run(results / "table2-cpu", "resnet18-cifar10-pgd_at", "cpu-resnet18-cifar10-pgd_at", clean=40.0,
             attacks={**five, "autoattack": 20.0})
    make_run(results / "table2-cpu", "resnet18-cifar10-pgd_at-ibrar", "cpu-resnet18-cifar10-pgd_at-ibrar",
             clean=41.0, attacks={**{a: v + 4.0 for a, v in five.items()}, "autoattack": 23.0})
    after = claim(results, "IB-RAR on top of")
    evidence = after.evidence["cpu"]
    resnet = evidence.lines[-1]
    assert len(evidence.lines) == 4 and resnet.label.startswith("ResNet18 PGD-AT (`results/table2-cpu/`")
    assert "mean over the five attacks +4.0" in resnet.measured and resnet.verdict.kind == REPRODUCES
    pooled = statistics.fmean([0.5, 4.0])  # 2.25, which rounds up
    assert any("mean over PGD-AT, ResNet18 PGD-AT: +2.3" in r for r in evidence.verdict.reasons) and pooled == 2.25
    effect = statistics.fmean([ledger_comparisons.paper_gain("vgg16-cifar10-pgd_at-ibrar",
                                                             ("PGD", "CW", "FGSM", "FAB", "NIFGSM")), 2.66])
    effect = Decimal(repr(effect)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    assert any(f"the paper over the same pairs: +{effect}, each Table 2 pair counted at" in r
               for r in evidence.verdict.reasons)
    assert any("not run at cpu scale yet: TRADES, MART, ResNet18 TRADES, ResNet18 MART" in r
               for r in evidence.verdict.reasons)
    assert "VGG16 and ResNet18 on CIFAR-10" in after.note
    assert all("ResNet18" not in line.label for line in claim(results, "The clean-accuracy gain").evidence["cpu"].lines)


def test_each_pair_is_judged_against_its_own_papers_effect_and_only_the_claim_against_the_pooled_one(tmp_path):
    """PGD-AT's paper gain is 3.88 (bar 1.94): its +1.7 is short of that, though it would clear the pooled bar of
    PGD-AT and a ResNet18 pair (the paper's 3.88 and 2.66: bar 1.64). A pair's verdict must not depend on which
    other pairs ran."""
    results = tmp_path / "results"
    table1_pair(results, "pgd_at", 0, 38.4, 44.1, (21.8, 23.5))
    path = results / "table1-cpu" / "vgg16-cifar10-pgd_at-ibrar" / "eval.json"
    result = json.loads(path.read_text())
    result["attacks"] = [{**a, "accuracy": a["accuracy"] + (0.012 if a["name"] != "autoattack" else 0)}
                         for a in result["attacks"]]
    path.write_text(json.dumps(result))
    five = {"pgd10": 25.0, "cw": 20.0, "fgsm": 26.0, "fab": 22.0, "nifgsm": 27.0}
    make_run(results / "table2-cpu", "resnet18-cifar10-pgd_at", "cpu-resnet18-cifar10-pgd_at", clean=40.0,
             attacks={**five, "autoattack": 20.0})
    make_run(results / "table2-cpu", "resnet18-cifar10-pgd_at-ibrar", "cpu-resnet18-cifar10-pgd_at-ibrar",
             clean=41.0, attacks={**{a: v + 4.0 for a, v in five.items()}, "autoattack": 24.0})
    evidence = claim(results, "IB-RAR on top of").evidence["cpu"]
    vgg, resnet = evidence.lines[0], evidence.lines[-1]
    assert "mean over the five attacks +1.7" in vgg.measured and vgg.verdict.kind == DOES_NOT
    assert resnet.verdict.kind == REPRODUCES
    assert any("threshold 1.6" in r for r in evidence.verdict.reasons)


def test_convergence_counts_epochs_saved_over_the_pairs_that_ran(tmp_path):
    results = tmp_path / "results"
    table1_pair(results, "pgd_at", 0, 38.0, 44.0, (21.8, 21.4))
    folder = results / "table1-cpu"
    for name, curve in (("vgg16-cifar10-pgd_at", [0.2, 0.25, 0.3, 0.34, 0.36, 0.37, 0.38, 0.38, 0.38, 0.38]),
                        ("vgg16-cifar10-pgd_at-ibrar", [0.3, 0.36, 0.38, 0.4, 0.41, 0.42, 0.43, 0.44, 0.44, 0.44])):
        (folder / name / "metrics.jsonl").write_text("".join(
            json.dumps({"epoch": e + 1, "test_clean_acc": a}) + "\n" for e, a in enumerate(curve)))
    evidence = claim(results, "Faster convergence").evidence["cpu"]
    assert evidence.verdict.kind == REPRODUCES  # 0.38 at epoch 3 instead of 7
    assert "+4.0" in evidence.lines[1].measured
    assert any("MART (CIFAR-10, Table 1)" in r for r in evidence.verdict.reasons)


def test_convergence_waits_for_both_runs_of_a_seed_to_finish_training(tmp_path):
    """A run still training has no final accuracy: judging its first epochs would count as never reaching it."""
    results = tmp_path / "results"
    folder = results / "table1-cpu"
    make_run(folder, "vgg16-cifar10-mart", "cpu-table1-mart", curve=[0.1, 0.15, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2,
                                                                      0.2], attacks={"pgd10": 20.0})
    make_run(folder, "vgg16-cifar10-mart-ibrar", "cpu-table1-mart-ibrar", curve=[0.1, 0.12, 0.15], attacks=None)
    line = claim(results, "Faster convergence").evidence["cpu"].lines[0]
    assert line.verdict == Verdict(UNDECIDED, ("MART (CIFAR-10, Table 1), with the IB terms seed 0: trained 3 of 10 "
                                               "epochs",))


def test_table6_with_one_of_its_two_findings_run_is_undecided(tmp_path):
    """Table 6's claim is both findings: with adversarial training, and without."""
    results = tmp_path / "results"
    make_run(results / "table6-cpu", "at-ibrar", "cpu-table1-pgd_at-ibrar",
             attacks={"pgd10": 26.5, "adaptive10": 27.5, "adaptive100": 27.2, "autoattack": 21.4})
    evidence = claim(results, "The adaptive attack").evidence["cpu"]
    assert evidence.lines[0].verdict.kind == REPRODUCES
    assert evidence.verdict == Verdict(UNDECIDED, ("plain IB-RAR − plain CE under PGD_AD: not run at cpu scale yet",))


def test_table6_at_paper_scale_judges_the_kits_plain_networks_of_each_optimizer_with_table_1s_one_run(tmp_path):
    """The GPU kit's plain networks come in two optimizers (`-authors-optim`), its PGD-AT + IB-RAR run (Table 1's)
    in one: each optimizer is a setting with that one run in it, and the strongest decides."""
    results = tmp_path / "results"
    folder = results / "table6-paper"
    make_run(folder, "at-ibrar", "table1-pgd_at-ibrar", width=1.0, subset=None, epochs=60, momentum=0.0,
             attacks={"pgd10": 48.0, "adaptive10": 47.5, "adaptive100": 47.0, "autoattack": 42.0})
    for name, pgd_ad in (("plain-ibrar", 1.0), ("plain-ce", 1.0), ("plain-ibrar-authors-optim", 30.0),
                         ("plain-ce-authors-optim", 0.5)):
        make_run(folder, name, "table4-vgg16-1-ce", width=1.0, subset=None, epochs=60,
                 momentum=0.9 if "authors" in name else 0.0, decay=0.0 if "authors" in name else 0.01,
                 attacks={"pgd10": pgd_ad, "adaptive10": pgd_ad, "adaptive100": pgd_ad,
                          "autoattack": 5.0 if name == "plain-ibrar-authors-optim" else 0.0})
    evidence = claim(results, "The adaptive attack").evidence["paper"]
    labels = [line.label for line in evidence.lines]
    assert len(labels) == 4 and sum("run folders `<run>-authors-optim`" in label for label in labels) == 1
    assert [line.verdict.kind for line in evidence.lines] == [REPRODUCES, DOES_NOT, REPRODUCES, REPRODUCES]
    assert evidence.verdict.kind == REPRODUCES  # the authors' optimizer's setting decides


def test_a_link_to_a_repeated_heading_goes_to_the_one_inside_its_section():
    doc = "\n".join(["# Doc", "## Table 1: a", "### Results at paper scale (GPU)", "## Table 4: b", "### Other",
                     "### Results at paper scale (GPU)", "## Table 6: c", "### Results at cpu scale", "## Figure 2: d",
                     "### Results at paper scale (GPU)", "```", "## Table 9: in a code block", "```"])
    headings = ledger.anchors(doc)
    # numbered as GitHub numbers repeats; a heading inside a code block is none
    assert [anchor for _, anchor in headings][-3:] == ["results-at-cpu-scale", "figure-2-d",
                                                       "results-at-paper-scale-gpu-2"]
    paper = "### Results at paper scale (GPU)"
    assert ledger._link("T4", f"## Table 4: > {paper}", headings) == "[T4](#results-at-paper-scale-gpu-1)"
    assert ledger._link("F2", f"## Figure 2: > {paper}", headings) == "[F2](#results-at-paper-scale-gpu-2)"
    assert ledger._link("T1", paper, headings) == "[T1](#results-at-paper-scale-gpu)"
    # Table 6 has no paper-scale section: no link, not Figure 2's, which comes after it
    assert ledger._link("T6", f"## Table 6: > {paper}", headings) == "T6"
    assert ledger._link("T9", "## Table 9:", headings) == "T9"


# ---- the committed ledger ------------------------------------------------------------------------------


def test_the_committed_ledger_lists_every_claim_with_a_verdict_and_links_that_resolve():
    doc = (REPO / "docs/reproduction.md").read_text()
    body = next(m.group("body") for m in MARKER.finditer(doc) if m.group("name") == "claims")
    anchors = {anchor for _, anchor in ledger.anchors(doc)}
    summary = [line for line in body.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(summary) == len(ledger.claims(REPO / "results", REPO)) >= 9
    verdicts = (REPRODUCES, PAPER_ONLY, UNDECIDED, DOES_NOT, NOT_RUN)
    for line in summary:
        cells = line.split(" | ")
        assert all(any(f"**{v}**" in cell for v in verdicts) for cell in cells[2:4]), line
        links = [part.split(")")[0] for part in line.split("](#")[1:]]
        assert links and all(link in anchors for link in links), line
    headline = summary[0]
    # Table 1's paper-scale section comes first in the doc, so Table 4's has GitHub's suffix
    assert "[Table 4 at paper scale](#results-at-paper-scale-gpu-1)" in headline.split(" | ")[3]


# ---- Table 3 and Table 6 ---------------------------------------------------------------------------------


def test_table3_reproduces_only_when_its_rule_names_the_papers_layers_under_autoattack_too(tmp_path):
    results = tmp_path / "results"
    folder = results / "table3-cpu"
    make_run(folder, "ce", "cpu-table4-vgg16-1-ce", attacks={"pgd10": 0.1, "autoattack": 0.0})
    for layer, pgd in (*((f"block{k}", 0.5) for k in range(1, 5)), ("block5", 9.0), ("fc1", 8.0), ("fc2", 7.0)):
        make_run(folder, f"layer-{layer}", "cpu-table4-vgg16-2-ib", attacks={"pgd10": pgd, "autoattack": 0.0})
    evidence = claim(results, "Robust layers").evidence["cpu"]
    assert evidence.verdict.kind == PAPER_ONLY
    assert "PGD-10 names block5, fc1, fc2; AutoAttack names none" in evidence.lines[0].measured
    assert claim(results, "Robust layers").evidence["paper"].verdict.kind == NOT_RUN


def test_table3_with_a_layer_not_run_is_undecided_unless_a_layer_that_ran_already_contradicts_the_paper(tmp_path):
    results = tmp_path / "results"
    folder = results / "table3-cpu"
    make_run(folder, "ce", "cpu-table4-vgg16-1-ce", attacks={"pgd10": 0.1, "autoattack": 0.0})
    for layer, pgd in (("block5", 9.0), ("fc1", 8.0), ("fc2", 7.0)):  # the paper's layers, and no others yet
        make_run(folder, f"layer-{layer}", "cpu-table4-vgg16-2-ib", attacks={"pgd10": pgd, "autoattack": 5.0})
    evidence = claim(results, "Robust layers").evidence["cpu"]
    assert evidence.verdict.kind == UNDECIDED  # block1-block4 could be robust as well
    assert "not run at cpu scale yet: IB on block1, IB on block2, IB on block3, IB on block4" in evidence.verdict.text()
    assert "PGD-10 names block5, fc1, fc2 (of 3 evaluated)" in evidence.lines[0].measured
    make_run(folder, "layer-block2", "cpu-table4-vgg16-2-ib", attacks={"pgd10": 6.0, "autoattack": 0.0})
    assert claim(results, "Robust layers").evidence["cpu"].verdict.kind == DOES_NOT  # block2 is not the paper's


def test_table6_holds_the_adversarially_trained_network_and_the_plain_one_to_their_own_findings(tmp_path):
    results = tmp_path / "results"
    folder = results / "table6-cpu"
    make_run(folder, "at-ibrar", "cpu-table1-pgd_at-ibrar",
             attacks={"pgd10": 26.5, "adaptive10": 27.5, "adaptive100": 27.2, "autoattack": 21.4})
    make_run(folder, "plain-ce", "cpu-table4-vgg16-1-ce",
             attacks={"pgd10": 0.1, "adaptive10": 1.8, "adaptive100": 0.8, "autoattack": 0.0})
    make_run(folder, "plain-ibrar", "cpu-table4-vgg16-6-ibrar",
             attacks={"pgd10": 9.0, "adaptive10": 6.0, "adaptive100": 5.0, "autoattack": 0.0})
    evidence = claim(results, "The adaptive attack").evidence["cpu"]
    at, plain = evidence.lines
    assert at.verdict.kind == REPRODUCES and "PGD_AD − PGD-10 +0.7" in at.measured
    assert plain.verdict.kind == PAPER_ONLY and "PGD_AD 5.0 vs 0.8 (+4.2)" in plain.measured
    assert evidence.verdict.kind == PAPER_ONLY  # the weaker of the two


def test_the_gpu_kits_merged_evaluation_decides_the_headline(tmp_path, monkeypatch):
    """eval.json as bench/gpu/stages.py merges it: the paper's attacks on the whole test set, AutoAttack's entry
    from the seeded subset of 1,000 with its own n."""
    monkeypatch.syspath_prepend(str(REPO / "bench" / "gpu"))
    import stages

    folder = tmp_path / "results" / "table4-paper"
    for row, pgd, aa in (("6-ibrar", 30.0, 0.0), ("1-ce", 0.1, 0.0)):
        run = make_run(folder, f"vgg16-{row}", f"table4-vgg16-{row}", **PAPER_SETTING,
                       attacks={"pgd10": pgd, "nifgsm": pgd, "fgsm": 40.0}, n=10000)
        full = json.loads((run / "eval.json").read_text())
        subset = {"n": 1000, "seed": 0, "clean": 0.9, "attacks": [{"name": "pgd10", "accuracy": pgd / 100},
                                                                  {"name": "autoattack", "accuracy": aa / 100}]}
        (run / "eval.json").write_text(json.dumps(stages.merge_evaluations(full, subset, "autoattack")))
    evidence = claim(tmp_path / "results", "Table 4's headline").evidence["paper"]
    assert evidence.verdict.kind == PAPER_ONLY
    assert "10,000 test images (AutoAttack: 1,000)" in evidence.lines[0].label
    assert "PGD-10 30.0 vs 0.1 (+29.9); AutoAttack 0.0 vs 0.0 (0.0)" in evidence.lines[0].measured
