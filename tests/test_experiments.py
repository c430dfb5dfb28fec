"""The paper's experiments run end to end at smoke scale on generated ImageFolder data, skip finished runs,
resume interrupted ones, print scheduler commands, and write results beside the paper's numbers."""

from __future__ import annotations

import json
import shlex
import shutil

import pytest

from ibrar.cli import main
from ibrar.config import find_config, shipped_configs, shipped_configs_dir
from ibrar.experiments import EXPERIMENTS, build_experiment, get_scale, run_experiment
from ibrar.experiments.base import format_number, make_runs, resolve_config
from ibrar.experiments.measure import Cell
from ibrar.run_folder import RunFolder


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("experiments")


def _run(name, out_dir, image_folder):
    folder = run_experiment(build_experiment(name, "smoke"), out_dir, image_folder, quiet=True,
                            log=lambda _line: None)
    results = json.loads((folder / "results.json").read_text())
    assert results["scale"] == "smoke" and results["seeds"] == 1
    assert (folder / "results.md").read_text().startswith("# ")
    return folder, results


def test_every_experiment_builds_at_every_scale():
    for name in EXPERIMENTS:
        for scale in ("smoke", "cpu", "paper"):
            experiment = build_experiment(name, scale)
            assert experiment.runs and len({r.name for r in experiment.runs}) == len(experiment.runs)
            assert all(r.config.is_file() for r in experiment.runs)


def test_paper_scale_uses_the_paper_configs_unchanged():
    experiment = build_experiment("table4", "paper")
    assert all(r.config.parent.name == "paper" for r in experiment.runs)
    assert all(r.overrides == ("eval.attacks=[]",) for r in experiment.runs)
    assert "autoattack" in experiment.runs[0].attacks


def test_cpu_scale_prefers_the_cpu_twin_and_sizes_other_configs(tmp_path):
    table1 = build_experiment("table1", "cpu")
    assert table1.runs[0].config.parent.name == "cpu" and table1.runs[0].n == 1000
    (tmp_path / "paper").mkdir()
    (tmp_path / "paper" / "only-paper.yaml").write_text("name: x\n")
    path, overrides = resolve_config("only-paper", get_scale("cpu"), tmp_path)
    assert path.parent.name == "paper" and "model.width=0.25" in overrides


def test_seeds_become_separate_runs_of_one_group():
    specs = make_runs("ce", "table4-vgg16-1-ce", get_scale("smoke"), 3, ["pgd10"])
    assert [s.name for s in specs] == ["ce-seed0", "ce-seed1", "ce-seed2"]
    assert {s.group for s in specs} == {"ce"} and specs[2].overrides[-1] == "seed=2"


# Runs that train exactly what another experiment's run trains, so that one trained network serves both (its
# folder is copied; `ibrar reproduce` then only evaluates it). (experiment, run) -> (experiment, run).
SHARED_TRAININGS = {
    ("table3", "ce"): ("table4", "vgg16-1-ce"),
    ("table3", "layers-robust"): ("table4", "vgg16-2-ib"),
    ("fig2", "ce"): ("table4", "vgg16-1-ce"),
    ("fig2", "ibrar-rob"): ("table4", "vgg16-6-ibrar"),
    ("table6", "plain-ce"): ("table4", "vgg16-1-ce"),
    ("table6", "plain-ibrar"): ("table4", "vgg16-6-ibrar"),
    ("table6", "at-ibrar"): ("table1", "vgg16-cifar10-pgd_at-ibrar"),
}


@pytest.mark.parametrize("scale", ["cpu", "paper"])
@pytest.mark.parametrize("ours,theirs", SHARED_TRAININGS.items(), ids=lambda key: "-".join(key))
def test_runs_that_share_a_training_have_equal_configs(ours, theirs, scale):
    from ibrar.config import load_config

    def config_of(experiment, run):
        spec = build_experiment(experiment, scale).runs_of(run)[0]
        return spec, load_config(spec.config, list(spec.overrides)).model_dump(mode="json")

    our_spec, our_config = config_of(*ours)
    their_spec, their_config = config_of(*theirs)
    assert our_config == their_config
    if ours[0] == "table3":  # Table 3 reuses Table 4's evaluation too: its attacks, in order, on the same examples
        assert their_spec.attacks[:1] == our_spec.attacks[:1] == ("pgd10",) and "autoattack" in their_spec.attacks
        assert (our_spec.n, our_spec.seed) == (their_spec.n, their_spec.seed)


def test_the_gpu_kit_gives_table6_the_runs_it_shares_a_training_with():
    """`table6.SOURCES`: the runs whose weights the GPU kit evaluates with Table 6's attacks as well."""
    from ibrar.experiments import table6

    assert {theirs: ours[1] for ours, theirs in SHARED_TRAININGS.items() if ours[0] == "table6"} == table6.SOURCES


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="name"):
        build_experiment("table5", "smoke")
    with pytest.raises(ValueError, match="scale"):
        build_experiment("table1", "huge")
    with pytest.raises(ValueError, match="seeds"):
        build_experiment("table1", "smoke", seeds=0)


def test_cell_reports_mean_std_and_difference_to_the_paper():
    cell = Cell((40.0, 42.0), paper=45.0)
    assert cell.mean == 41.0 and cell.diff == -4.0 and round(cell.std, 3) == 1.414
    assert Cell((30.0,)).std is None and Cell((30.0,)).diff is None and Cell(()).mean is None


def test_format_number_never_writes_exponents():
    assert format_number(5e-05) == "0.00005" and format_number(1.0) == "1.0"


def test_print_commands_gives_one_train_and_eval_line_per_run(capsys, image_folder, tmp_path):
    assert main(["reproduce", "table6", "--scale", "smoke", "--out", str(tmp_path), "--data-root",
                 str(image_folder), "--print-commands"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and not list(tmp_path.iterdir())
    assert all(line.startswith("ibrar train ") and " && ibrar eval " in line for line in lines)
    assert "adaptive2,adaptive3" in lines[0]


def test_print_commands_name_shipped_configs_as_ibrar_list_configs_does(capsys, tmp_path, monkeypatch):
    """So the lines run wherever ibrar is installed, not only where this checkout lies."""
    assert main(["reproduce", "table4", "--scale", "cpu", "--out", str(tmp_path), "--print-commands",
                 "--only", "vgg16-6-ibrar"]) == 0
    (line,) = capsys.readouterr().out.strip().splitlines()
    config = shlex.split(line)[2]
    assert config == "cpu/table4-vgg16-6-ibrar.yaml" and config in shipped_configs()
    monkeypatch.chdir(tmp_path)  # and the name finds the shipped file from anywhere
    assert find_config(config) == shipped_configs_dir() / config


def test_print_commands_keeps_to_the_runs_only_names(capsys, image_folder, tmp_path):
    assert main(["reproduce", "table6", "--scale", "smoke", "--out", str(tmp_path), "--data-root",
                 str(image_folder), "--print-commands", "--only", "plain-ce,at-ibrar"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(" --out ")[1].split()[0].rsplit("/", 1)[1] for line in lines] == ["plain-ce", "at-ibrar"]


def test_table6_runs_skips_finished_runs_and_resumes_an_interrupted_one(out_dir, image_folder):
    folder, results = _run("table6", out_dir, image_folder)
    table = results["tables"][0]
    assert [r["run"] for r in table["rows"]] == ["plain-ce", "plain-ibrar", "at-ibrar"]
    assert table["rows"][0]["cells"]["PGD_AD-10"]["mean"] is not None
    assert results["attacks"]["autoattack"] == "apgd-ce3"
    experiment = build_experiment("table6", "smoke")
    assert all(RunFolder(folder / r.name).state() == "done" for r in experiment.runs)
    # An interrupted run: no final weights, no eval; the runner resumes it from checkpoint.pt.
    victim = folder / "plain-ce"
    (victim / "final.pt").unlink()
    (victim / "eval.json").unlink()
    before = {r.name: (folder / r.name / "eval.json").stat().st_mtime_ns for r in experiment.runs[1:]}
    seen = []
    run_experiment(experiment, out_dir, image_folder, quiet=True, log=seen.append)
    assert "resume" in seen[0] and all("skip" in line for line in seen[1:3])
    assert (victim / "final.pt").is_file()
    assert before == {r.name: (folder / r.name / "eval.json").stat().st_mtime_ns for r in experiment.runs[1:]}


def test_reproduce_says_run_i_of_n_and_the_experiments_time_left(out_dir, image_folder):
    experiment = build_experiment("table6", "smoke")
    folder = out_dir / "table6-smoke"
    if not all(RunFolder(folder / r.name).state() == "done" for r in experiment.runs):
        pytest.skip("needs the table6 runs")
    for run in experiment.runs[1:]:  # two runs to evaluate again: the second is told the first one's pace
        (folder / run.name / "eval.json").unlink()
    seen = []
    run_experiment(experiment, out_dir, image_folder, quiet=True, log=seen.append)
    assert seen[0].startswith("[1/3] plain-ce: skip") and "left" not in seen[0]
    assert seen[1].startswith("[2/3] plain-ibrar: evaluate") and "left" not in seen[1]
    assert seen[2].startswith("[3/3] at-ibrar: evaluate (experiment left about ")
    assert "at the pace of the 1 run so far" in seen[2]


def test_a_run_folder_with_another_config_is_refused(out_dir, image_folder, tmp_path):
    experiment = build_experiment("table6", "smoke")
    source = out_dir / "table6-smoke" / "plain-ce"
    if not source.is_dir():
        pytest.skip("needs the table6 runs")
    target = tmp_path / "table6-smoke" / "plain-ibrar"
    shutil.copytree(source, target)
    (target / "eval.json").unlink()
    with pytest.raises(ValueError, match="another config"):
        run_experiment(experiment, tmp_path, image_folder, quiet=True, log=lambda _line: None)


def test_table3_names_the_layers_that_beat_ce_by_the_margin(out_dir, image_folder, capsys):
    _, results = _run("table3", out_dir, image_folder)
    capsys.readouterr()
    assert main(["reproduce", "table3", "--scale", "smoke", "--out", str(out_dir), "--data-root",
                 str(image_folder), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "# Table 3" in out  # every run was finished: only the results are rebuilt
    assert "[1/6] ce: skip (finished)" in out  # --quiet drops the bars, never the run-by-run lines
    assert results["margin_pp"] == 2.0 and results["layers"] == ["block1", "block2", "fc1"]
    assert set(results["robust_layers_found"]) <= set(results["layers"])
    groups = [r["run"] for r in results["tables"][0]["rows"]]
    assert groups == ["ce", "layer-block1", "layer-block2", "layer-fc1", "layers-all", "layers-robust"]


def test_fig2_writes_step_curves_and_the_paper_clean_accuracies(out_dir, image_folder):
    folder, results = _run("fig2", out_dir, image_folder)
    first = results["tables"][0]["rows"][0]
    assert first["cells"]["Natural"]["paper"] == 89.88
    assert [t["columns"] for t in results["tables"][1:]] == [["1", "2"]] * 3
    assert (folder / "fig2-steps.png").stat().st_size > 0


def test_fig4_plots_convergence_from_metrics(out_dir, image_folder):
    folder, results = _run("fig4", out_dir, image_folder)
    assert len(results["tables"][0]["rows"]) == 4
    assert (folder / "fig4-convergence.png").stat().st_size > 0
    config = (folder / "mart-ib-first-epoch" / "config.yaml").read_text()
    assert "epochs: 1" in config and "name: imagefolder" in config


def test_fig6_sweeps_beta_with_alpha_a_tenth_of_it(out_dir, image_folder):
    folder, results = _run("fig6", out_dir, image_folder)
    assert len(results["tables"]) == 2
    assert "alpha: 0.001" in (folder / "vgg16-pgd_at-beta0.01" / "config.yaml").read_text()
    assert (folder / "fig6-resnet18-trades.png").stat().st_size > 0


def test_table1_compares_with_and_without_ibrar_beside_the_paper(out_dir, image_folder):
    folder, results = _run("table1", out_dir, image_folder)
    rows = results["tables"][0]["rows"]
    assert rows[1]["run"] == "vgg16-cifar10-pgd_at-ibrar"
    assert rows[1]["cells"]["PGD"]["paper"] == 45.09
    assert "AutoAttack" not in rows[1]["cells"]  # at smoke scale no column may claim to be AutoAttack
    assert rows[1]["cells"]["apgd-ce3 (smoke stand-in, not AutoAttack)"]["paper"] is None
    assert [t["title"] for t in results["tables"]] == ["PGD-AT, CIFAR-10 with VGG16", "TRADES, CIFAR-10 with VGG16",
                                                       "MART, CIFAR-10 with VGG16", "PGD-AT, Tiny ImageNet with VGG16"]
    assert results["tables"][3]["rows"][0]["cells"]["Natural"]["paper"] == 37.54
    text = (folder / "results.md").read_text()  # each pair's difference beside the paper's
    assert "| difference | " in text and "| difference (paper) | +1.20 | +2.64 |" in text
    assert "| PGD-10 (pgd2 at smoke scale) |" in text  # a header never claims the full attack at smoke scale


def test_table2_runs_resnet18_and_wide_resnet_rows(out_dir, image_folder):
    _, results = _run("table2", out_dir, image_folder)
    assert [len(t["rows"]) for t in results["tables"]] == [2] * 6


def test_table4_writes_the_ablation_and_its_figures(out_dir, image_folder):
    folder, results = _run("table4", out_dir, image_folder)
    assert results["tables"][0]["rows"][5]["cells"]["PGD"]["paper"] == 35.86
    for stem in ("fig3-tsne", "fig5-infoplane", "table5-confusion"):
        assert (folder / f"{stem}.png").stat().st_size > 0
    assert "target class" in (folder / "table5-confusion.md").read_text()
