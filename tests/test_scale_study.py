"""The scale study (issue: does the paper's headline appear with scale?): its runs vary one factor at a time,
reuse Table 4's cpu-scale runs at width 0.25, train cheap points with two seeds, and report a table per axis
with a figure."""

from __future__ import annotations

import json

from ibrar.config import load_config
from ibrar.experiments import build_experiment, run_experiment


def _configs(experiment):
    return {r.name: load_config(r.config, list(r.overrides)) for r in experiment.runs}


def test_cpu_scale_varies_one_factor_at_a_time():
    experiment = build_experiment("scale", "cpu")
    configs = _configs(experiment)
    width_runs = {n: c for n, c in configs.items() if "-width" in n}
    assert {c.model.width for c in width_runs.values()} == {0.25, 0.5, 1.0}
    assert {c.data.train_subset for c in width_runs.values()} == {10000}
    assert {c.train.epochs for c in width_runs.values()} == {10}
    length_runs = {n: c for n, c in configs.items() if "-epochs" in n}
    assert {c.model.width for c in length_runs.values()} == {0.25}
    assert {c.data.train_subset for c in length_runs.values()} == {None}
    assert sorted({(c.train.epochs, c.optim.step_size) for c in length_runs.values()}) == [(10, 4), (60, 20)]
    rows = {epochs: {n.split("-epochs")[0] for n, c in length_runs.items() if c.train.epochs == epochs}
            for epochs in (10, 60)}
    # row (5), the mask alone, only where IB-RAR parts from CE only: the paper's 60 epochs
    assert rows == {10: {"1-ce", "2-ib", "6-ibrar"}, 60: {"1-ce", "2-ib", "5-ce-mask", "6-ibrar"}}
    assert not any(n.startswith("5-ce-mask") for n in width_runs)


def test_cheap_points_get_two_seeds_and_costly_ones_one():
    experiment = build_experiment("scale", "cpu")
    assert [r.name for r in experiment.runs_of("6-ibrar-width0.5")] == ["6-ibrar-width0.5-seed0",
                                                                        "6-ibrar-width0.5-seed1"]
    assert [r.name for r in experiment.runs_of("6-ibrar-width1.0")] == ["6-ibrar-width1.0"]
    assert [r.name for r in experiment.runs_of("1-ce-epochs60")] == ["1-ce-epochs60"]


def test_training_length_runs_add_the_attack_steps_curves():
    """Where the paper's 10-step attacks and AutoAttack part, the curves say whether more steps close the gap."""
    experiment = build_experiment("scale", "cpu")
    steps = {r.name: r.steps for r in experiment.runs}
    assert {s for n, s in steps.items() if "-epochs" in n} == {(1, 5, 10, 20, 50)}
    assert {s for n, s in steps.items() if "-width" in n} == {()}


def test_width_quarter_seed0_is_table4s_cpu_run():
    """So a finished Table 4 run folder can stand in for it (the runner checks the configs are equal)."""
    scale_run = build_experiment("scale", "cpu").runs_of("2-ib-width0.25")[0]
    table4_run = build_experiment("table4", "cpu").runs_of("vgg16-2-ib")[0]
    ours = load_config(scale_run.config, list(scale_run.overrides)).model_dump(mode="json")
    theirs = load_config(table4_run.config, list(table4_run.overrides)).model_dump(mode="json")
    assert ours == theirs
    assert scale_run.attacks == ("pgd10", "fgsm", "nifgsm", "autoattack") and scale_run.n == 1000


def test_paper_scale_is_the_papers_setting_only():
    experiment = build_experiment("scale", "paper")
    assert [r.name for r in experiment.runs] == ["1-ce-width1.0", "2-ib-width1.0", "6-ibrar-width1.0"]
    config = load_config(experiment.runs[0].config, list(experiment.runs[0].overrides))
    assert (config.model.width, config.data.train_subset, config.train.epochs) == (1.0, None, 60)


def test_smoke_study_writes_a_table_per_axis_and_the_figure(tmp_path, image_folder):
    folder = run_experiment(build_experiment("scale", "smoke"), tmp_path, image_folder, quiet=True,
                            log=lambda _line: None)
    results = json.loads((folder / "results.json").read_text())
    width, length = results["tables"]
    assert [r["run"] for r in width["rows"][:3]] == ["1-ce-width0.25", "2-ib-width0.25", "6-ibrar-width0.25"]
    assert width["rows"][0]["seeds"] == 2 and width["rows"][0]["cells"]["PGD"]["std"] is not None
    assert width["rows"][0]["cells"]["PGD"]["paper"] == 0.10
    assert [r["run"] for r in length["rows"]] == ["1-ce-epochs1", "2-ib-epochs1", "6-ibrar-epochs1",
                                                  "1-ce-epochs2", "2-ib-epochs2", "5-ce-mask-epochs2",
                                                  "6-ibrar-epochs2"]
    assert length["rows"][5]["seeds"] == 1 and length["rows"][5]["cells"]["PGD"]["paper"] == 0.16
    # the paper's rows follow Table 4's order, row (5) among them, though row (5) has only the longer setting
    text = (folder / "results.md").read_text()
    paper_rows = [line.split(" |")[0] for line in text.splitlines() if "paper (width 1, 50,000 images" in line]
    rows = ("(1) CE only", "(2) IB loss", "(5) CE + mask", "(6) IB-RAR")
    assert paper_rows[-4:] == [f"| {row}, paper (width 1, 50,000 images, 60 epochs)" for row in rows]
    assert (folder / "scale-study.png").stat().st_size > 0
