"""The `ibrar` command: every user mistake is one message and exit code 2, a bug a traceback and exit code 1;
main never raises."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import tiny_config
from ibrar.attacks import build_attack
from ibrar.cli import main
from ibrar.models import create_model

SRC = Path(__file__).resolve().parents[1] / "src"


def write_config(path: Path, data_root: Path, **sections) -> Path:
    path.write_text(yaml.safe_dump(tiny_config(data_root, **sections)))
    return path


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


@pytest.fixture(scope="module")
def cli_run(image_folder, tmp_path_factory) -> Path:
    """A run trained end to end by `ibrar train`, evaluated with FGSM at its end."""
    folder = tmp_path_factory.mktemp("cli")
    config = write_config(folder / "config.yaml", image_folder, eval={"attacks": ["fgsm"], "n": 8},
                          train={"epochs": 2, "eval_pgd_steps": 0, "info_plane_every": 0})
    assert main(["train", str(config), "--out", str(folder / "run"), "--quiet", "train.epochs=1"]) == 0
    return folder / "run"


# ---- usage errors ------------------------------------------------------------------------------------


def test_unknown_command_exits_2_with_a_message(capsys):
    code, _, err = run_main(capsys, "trian")
    assert code == 2 and "invalid choice: 'trian'" in err


@pytest.mark.parametrize("argv", [["train", "c.yaml", "--bogus"], ["eval", "run", "--atacks", "fgsm"],
                                  ["--x"]])
def test_unknown_option_exits_2_with_a_message(argv, capsys):
    code, _, err = run_main(capsys, *argv)
    assert code == 2 and "unrecognized arguments" in err


def test_no_command_prints_help_and_exits_2(capsys):
    code, _, err = run_main(capsys)
    assert code == 2 and "train" in err and "eval" in err


def test_help_returns_0_instead_of_exiting(capsys):
    code, out, _ = run_main(capsys, "train", "--help")
    assert code == 0 and "--resume" in out


def test_train_needs_a_config_or_resume(capsys):
    code, _, err = run_main(capsys, "train")
    assert code == 2 and "CONFIG.yaml is needed" in err


def test_train_refuses_a_config_together_with_resume(image_folder, tmp_path, capsys):
    config = write_config(tmp_path / "c.yaml", image_folder)
    code, _, err = run_main(capsys, "train", str(config), "--resume", str(tmp_path))
    assert code == 2 and "not both" in err


@pytest.mark.parametrize(("override", "key"), [("method.eps=-1", "method.eps"), ("modle.width=1", "modle"),
                                               ("model.name=vgg17", "model.name"),
                                               ("method.name=sgd", "method.name")])
def test_config_mistake_exits_2_naming_the_key(override, key, image_folder, tmp_path, capsys):
    config = write_config(tmp_path / "c.yaml", image_folder)
    code, _, err = run_main(capsys, "train", str(config), "--out", str(tmp_path / "run"), override)
    assert code == 2 and key in err
    assert not (tmp_path / "run").exists()


def test_overrides_after_options_still_apply(image_folder, tmp_path, capsys):
    config = write_config(tmp_path / "c.yaml", image_folder)
    code, _, err = run_main(capsys, "train", str(config), "--out", str(tmp_path / "run"), "--quiet",
                            "method.eps=-1")
    assert code == 2 and "method.eps" in err


def test_missing_data_folder_exits_2_naming_where_it_looked(tmp_path, capsys):
    config = write_config(tmp_path / "c.yaml", tmp_path / "nothing-here")
    code, _, err = run_main(capsys, "train", str(config), "--out", str(tmp_path / "run"))
    assert code == 2
    assert "imagefolder (train split) not found" in err
    assert str(tmp_path / "nothing-here" / "train") in err and "--data-root" in err


def test_missing_cifar_names_every_place_it_looked(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("IBRAR_DATA_ROOT", raising=False)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"model": {"name": "small_cnn", "width": 0.25}, "device": "cpu"}))
    code, _, err = run_main(capsys, "train", str(config), "--data-root", str(tmp_path / "d"),
                            "--out", str(tmp_path / "run"))
    assert code == 2
    assert str(tmp_path / "d" / "cifar-10-batches-py") in err and "cifar10-jpeg" in err


def test_eval_of_a_folder_without_checkpoint_exits_2(tmp_path, capsys):
    code, _, err = run_main(capsys, "eval", str(tmp_path))
    assert code == 2 and "final.pt" in err
    code, _, err = run_main(capsys, "eval", str(tmp_path / "absent"))
    assert code == 2 and "does not exist" in err


# ---- real runs ---------------------------------------------------------------------------------------


def test_train_writes_the_run_folder_and_evaluates_it(cli_run):
    config = yaml.safe_load((cli_run / "config.yaml").read_text())
    assert config["train"]["epochs"] == 1  # the override after the options applied
    assert (cli_run / "final.pt").is_file()
    result = json.loads((cli_run / "eval.json").read_text())
    assert "checkpoint" in result and "warnings" in result


def test_eval_of_a_run_folder_writes_eval_json(cli_run, image_folder, capsys):
    (cli_run / "eval.json").unlink()
    code, out, _ = run_main(capsys, "eval", str(cli_run), "--data-root", str(image_folder), "--attacks",
                            "fgsm,pgd2", "--n", "8", "--device", "cpu", "--quiet")
    assert code == 0 and "fgsm" in out and "pgd2" in out
    result = json.loads((cli_run / "eval.json").read_text())
    assert result["checkpoint"].endswith("final.pt")
    assert result["total_seconds"] >= result["seconds"] > 0  # the whole evaluation, not only its attacks


@pytest.mark.parametrize(("argv", "message"), [
    (["--attacks", "nosuch"], "name must be one of"),
    (["--n", "0"], "--n"),
    (["--device", "tpu"], "invalid choice"),
    (["--n", "many"], "or 'all'"),
])
def test_eval_bad_options_exit_2(argv, message, cli_run, capsys):
    code, _, err = run_main(capsys, "eval", str(cli_run), "--device", "cpu", *argv)
    assert code == 2 and message in err


@pytest.mark.parametrize(("argv", "message"), [
    (["--attacks", ","], "--attacks: expected comma-separated attack names"),
    (["--attacks", "fgsm", "--robustbench-card", "Card"], "has no autoattack"),
    (["--attacks", "autoattack", "--robustbench-card", "Card", "--card-field", "paper=x"], "unknown key 'paper'"),
    (["--attacks", "autoattack", "--robustbench-card", "Card", "--card-field", "name"], "expected KEY=VALUE"),
    (["--attacks", "autoattack", "--robustbench-card", "../Card"], "usable as a file name"),
    (["--attacks", "fgsm", "--card-field", "name=x"], "go with --robustbench-card"),
])
def test_eval_mistakes_are_refused_before_anything_is_evaluated(argv, message, cli_run, capsys):
    before = (cli_run / "eval.json").read_bytes()
    code, out, err = run_main(capsys, "eval", str(cli_run), "--device", "cpu", "--n", "8", "--quiet", *argv)
    assert code == 2 and message in err, err
    assert "estimated time" not in out and (cli_run / "eval.json").read_bytes() == before


def test_train_into_an_output_path_that_is_a_file_exits_2(image_folder, tmp_path, capsys):
    config = write_config(tmp_path / "c.yaml", image_folder)
    code, _, err = run_main(capsys, "train", str(config), "--out", str(config), "--quiet")
    assert code == 2 and "is a file, not a folder" in err


def test_overwrite_leaves_a_folder_that_holds_no_run_untouched(image_folder, tmp_path, capsys):
    config = write_config(tmp_path / "c.yaml", image_folder)
    mine = tmp_path / "mine"
    (mine / "drafts").mkdir(parents=True)
    (mine / "thesis.tex").write_text("months of work")
    code, _, err = run_main(capsys, "train", str(config), "--out", str(mine), "--overwrite", "--quiet")
    assert code == 2 and "holds files but no run" in err
    assert (mine / "thesis.tex").read_text() == "months of work" and (mine / "drafts").is_dir()


@pytest.mark.parametrize(("argv", "message"), [
    (["--only", ","], "--only: expected comma-separated run or row names"),
    (["--partition", "gpu"], "--partition go with --launcher"),
    (["--time", "30", "--wait"], "--time, --wait go with --launcher"),
    (["--launcher", "local", "--time", "0"], "--time: expected a positive integer"),
])
def test_reproduce_mistakes_exit_2_naming_the_option(argv, message, tmp_path, capsys):
    code, _, err = run_main(capsys, "reproduce", "table6", "--scale", "smoke", "--out", str(tmp_path), *argv)
    assert code == 2 and message in err, err
    assert not any(tmp_path.iterdir())  # nothing ran


def test_python_dash_m_ibrar_reports_a_usage_error_without_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.run([sys.executable, "-m", "ibrar", "train", str(tmp_path / "nope.yaml")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert "nope.yaml does not exist" in proc.stderr and "Traceback" not in proc.stderr


def test_a_bug_deep_in_the_code_shows_its_traceback_and_exits_1(image_folder, tmp_path, capsys, monkeypatch):
    import ibrar.train

    def broken_train(*_args, **_kwargs):
        raise ValueError("an internal check that is not about the user's input")

    monkeypatch.setattr(ibrar.train, "train", broken_train)
    config = write_config(tmp_path / "c.yaml", image_folder)
    code = main(["train", str(config), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 1
    assert "Traceback" in err and "broken_train" in err and "an internal check" in err


def test_user_errors_share_one_type():
    from ibrar.checkpoint import CheckpointError
    from ibrar.cli import UsageError
    from ibrar.config import ConfigError
    from ibrar.data import DataNotFoundError
    from ibrar.errors import IbrarError
    from ibrar.run_folder import RunFolderError
    from ibrar.train import NonFiniteLossError

    for error in (UsageError, ConfigError, CheckpointError, DataNotFoundError, RunFolderError, NonFiniteLossError):
        assert issubclass(error, IbrarError), error


def test_version_has_one_source(capsys):
    import importlib.metadata

    import ibrar

    code, out, _ = run_main(capsys, "--version")
    assert code == 0 and out.strip() == f"ibrar {ibrar.__version__}"
    pyproject = (SRC.parent / "pyproject.toml").read_text()
    assert not re.search(r"(?m)^version\s*=\s*\"", pyproject) and 'attr = "ibrar.__version__"' in pyproject
    try:
        assert importlib.metadata.version("ibrar") == ibrar.__version__
    except importlib.metadata.PackageNotFoundError:
        pass  # not installed, only on PYTHONPATH


@pytest.mark.parametrize(("what", "expected"), [("models", "vgg16"), ("attacks", "autoattack"),
                                                ("methods", "trades"), ("experiments", "table4"),
                                                ("configs", "cpu/table1-pgd_at-ibrar.yaml")])
def test_list_names_what_ibrar_has(what, expected, capsys):
    code, out, _ = run_main(capsys, "list", what)
    assert code == 0 and expected in out.split()


@pytest.mark.parametrize(("argv", "message"), [(["reproduce", "table9"], "invalid choice: 'table9'"),
                                               (["reproduce", "table4", "--scale", "huge"], "invalid choice: 'huge'"),
                                               (["list", "datasets"], "invalid choice: 'datasets'")])
def test_choices_are_checked_by_the_parser(argv, message, capsys):
    code, _, err = run_main(capsys, *argv)
    assert code == 2 and message in err


def test_print_config_shows_the_official_profile_applied(capsys):
    code, out, _ = run_main(capsys, "train", "configs/paper/table1-pgd_at-ibrar.yaml", "profile=official",
                            "--print-config")
    config = yaml.safe_load(out)
    assert code == 0
    assert config["method"]["eps"] == 0.03 and config["method"]["alpha"] == pytest.approx(0.0069)
    assert config["mask"]["rule"] == "official"


# ---- inputs given to attacks -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def attack():
    model = create_model("small_cnn", num_classes=4, width=0.25)
    return build_attack("pgd2", model, eps=8 / 255, seed=0)


@pytest.mark.parametrize("images", [lambda: torch.rand(2, 3, 32, 32) * 255,
                                    lambda: torch.rand(2, 3, 32, 32) - 1], ids=["0-255", "negative"])
def test_images_outside_0_1_are_a_value_error(images, attack):
    with pytest.raises(ValueError, match=r"x must have values in \[0, 1\]"):
        attack(images(), torch.tensor([0, 1]))


def test_uint8_images_are_a_value_error(attack):
    with pytest.raises(ValueError, match="floating-point"):
        attack(torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8), torch.tensor([0, 1]))


@pytest.mark.parametrize("labels", [[0, 4], [-1, 0]])
def test_labels_outside_the_classes_are_a_value_error(labels, attack):
    with pytest.raises(ValueError, match=r"class indices in \[0, 4\)"):
        attack(torch.rand(2, 3, 32, 32), torch.tensor(labels))


# ---- fuzz --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_files(tmp_path_factory) -> dict[str, str]:
    """Paths the fuzzed command lines may use; no data exists anywhere, so no run can start training."""
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "empty").mkdir()
    config = write_config(folder / "valid.yaml", folder / "no-data", train={"epochs": 1})
    (folder / "broken.yaml").write_text("model: {name: [")
    return {"valid": str(config), "broken": str(folder / "broken.yaml"), "empty": str(folder / "empty"),
            "missing": str(folder / "missing"), "folder": str(folder)}


TOKENS = ["train", "eval", "--resume", "--out", "--data-root", "--overwrite", "--quiet", "--attacks", "--n",
          "--steps", "--seed", "--batch-size", "--device", "--help", "fgsm,pgd2", "0", "-3", "cpu", "cuda",
          "train.epochs=1", "method.eps=8/255", "method.eps=-1", "model.name=nope", "ib.layers=[x]", "=",
          "a=", "{valid}", "{broken}", "{empty}", "{missing}"]


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(argv=st.lists(st.one_of(st.sampled_from(TOKENS), st.text(max_size=10)), max_size=7))
def test_fuzzed_command_lines_return_a_code_and_never_raise(argv, fuzz_files, monkeypatch, capsys):
    if argv and argv[0] not in ("train", "eval") and not argv[0].startswith("-"):
        argv = ["train", *argv]  # keep to the two commands whose failures are cheap
    argv = [a.format(**fuzz_files) if a.startswith("{") and a.endswith("}") and a[1:-1] in fuzz_files else a
            for a in argv]
    monkeypatch.setenv("IBRAR_DATA_ROOT", fuzz_files["missing"])
    cwd = os.getcwd()
    os.chdir(fuzz_files["folder"])  # a default runs/<name> folder lands in the temporary folder
    try:
        code = main(argv)
    finally:
        os.chdir(cwd)
    assert isinstance(code, int)
    assert code in (0, 2), (argv, code)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if code == 0:
        assert "--help" in argv or "-h" in argv, argv


def test_eval_autoattack_equals_the_reference_run_on_the_same_examples(cli_run, image_folder, capsys,
                                                                       monkeypatch):
    """`ibrar eval RUN --attacks autoattack --n N`: per-stage accuracies equal to pyautoattack's standard
    version (seed 0, batch size 250) on the seeded subset, the model loaded as ibrar loads it. Only the
    budget is cut (20 steps, 300 queries, on both sides) to keep the test suite fast."""
    from ibrar.attacks import ReferenceAutoAttack, registry
    from ibrar.data import load_split
    from ibrar.evaluate import select_subset
    from ibrar.loading import load_trained
    from test_reference_autoattack import percent, reference_stages

    budget = {"n_iter": 20, "n_queries": 300}
    monkeypatch.setitem(registry._FAMILIES, "autoattack",
                        (None, lambda m, eps, s, **p: ReferenceAutoAttack(m, eps=eps, **p, **budget)))
    (cli_run / "eval.json").unlink(missing_ok=True)
    code, out, _ = run_main(capsys, "eval", str(cli_run), "--data-root", str(image_folder), "--attacks",
                            "autoattack", "--n", "24", "--device", "cpu", "--no-large-eps-check")
    assert code == 0 and "estimated time about" in out and "rough estimate" in out
    block = json.loads((cli_run / "eval.json").read_text())["autoattack"]
    assert block["budget"] == budget and block["batch_size"] == 250 and block["n_target_classes"] == 3

    bundle, _, _ = load_trained(cli_run, device="cpu")
    test = load_split("imagefolder", image_folder, "test")
    index = select_subset(len(test.labels), 24, 0)
    x, y = test.images[index].float() / 255, test.labels[index].long()
    expected, _ = reference_stages(bundle.model.eval(), x, y, 8 / 255, block["n_target_classes"], **budget)
    assert percent(block["stages"]) == expected


def test_eval_defaults_to_1000_examples_or_the_whole_smaller_test_set(cli_run, image_folder, capsys):
    code, out, _ = run_main(capsys, "eval", str(cli_run), "--data-root", str(image_folder), "--attacks", "fgsm",
                            "--device", "cpu", "--no-large-eps-check")
    assert code == 0 and "evaluating 32 test examples with fgsm: estimated time about" in out
    assert json.loads((cli_run / "eval.json").read_text())["n"] == 32  # 1,000 asked, the test set holds 32
    code, _, _ = run_main(capsys, "eval", str(cli_run), "--data-root", str(image_folder), "--attacks", "fgsm",
                          "--n", "all", "--device", "cpu", "--quiet", "--no-large-eps-check")
    assert code == 0 and json.loads((cli_run / "eval.json").read_text())["n"] == 32
    code, _, err = run_main(capsys, "eval", str(cli_run), "--data-root", str(image_folder), "--n", "40",
                            "--device", "cpu", "--quiet")
    assert code == 2 and "--n all" in err


def test_default_eval_attacks_are_the_papers_plus_autoattack():
    from ibrar.run_eval import DEFAULT_ATTACKS, DEFAULT_N

    assert DEFAULT_ATTACKS == ("fgsm", "pgd10", "cw", "fab", "nifgsm", "autoattack") and DEFAULT_N == 1000


def test_a_resumed_run_and_its_evaluation_find_the_data_root_it_was_trained_with(image_folder, tmp_path, capsys,
                                                                                  monkeypatch):
    import shutil

    from ibrar.run_folder import RunFolder

    monkeypatch.delenv("IBRAR_DATA_ROOT", raising=False)
    image_folder = Path(shutil.copytree(image_folder, tmp_path / "data"))  # this test moves it
    config = tiny_config(image_folder, name="remembers")
    del config["data"]["root"]  # the data root comes from --data-root only
    config["train"]["epochs"] = 1
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    assert run_main(capsys, "train", str(path), "--out", str(run), "--data-root", str(image_folder), "--quiet",
                    "--no-eval")[0] == 0
    assert RunFolder(run).recorded_data_root() == image_folder.resolve()
    code, _, err = run_main(capsys, "train", "--resume", str(run), "train.epochs=2", "--quiet", "--no-eval")
    assert code == 0 and f"data root: {image_folder.resolve()}" in err
    assert [line["epoch"] for line in RunFolder(run).metrics()] == [1, 2]
    code, _, err = run_main(capsys, "eval", str(run), "--attacks", "fgsm", "--n", "16", "--quiet")
    assert code == 0 and RunFolder(run).evaluation().n == 16
    code, _, err = run_main(capsys, "plot", "confusion", str(run), "--n", "8", "--out", str(tmp_path / "confusion"))
    assert code == 0 and f"data root: {image_folder.resolve()}" in err  # the figures that need data find it too
    image_folder.rename(tmp_path / "elsewhere")  # a recorded root that is gone is not used: the usual error
    code, _, err = run_main(capsys, "eval", str(run), "--attacks", "fgsm", "--n", "16", "--quiet")
    assert code == 2 and "--data-root" in err


def test_a_new_evaluation_keeps_the_earlier_one_and_a_finished_run_resumes_to_nothing(image_folder, tmp_path,
                                                                                      capsys):
    from ibrar.run_folder import RunFolder

    config = write_config(tmp_path / "config.yaml", image_folder, eval={"attacks": ["fgsm"], "n": 8},
                          train={"epochs": 2, "eval_pgd_steps": 0, "info_plane_every": 0})
    run = tmp_path / "run"
    code, out, _ = run_main(capsys, "train", str(config), "--out", str(run), "--quiet")
    assert code == 0 and "epoch 1/2" in out and "epoch 2/2" in out  # --quiet: no bars, a line per epoch
    first = (run / "eval.json").read_text()
    code, _, err = run_main(capsys, "eval", str(run), "--attacks", "pgd2", "--n", "8", "--device", "cpu", "--quiet")
    kept = sorted((run / "eval-history").iterdir())
    assert code == 0 and [p.read_text() for p in kept] == [first] and str(kept[0]) in err
    assert [a.name for a in RunFolder(run).evaluation().attacks] == ["pgd2"]
    # trained all its epochs, evaluated with its own eval settings: nothing trained or evaluated again
    def untouched() -> tuple:
        return (run / "final.pt").stat().st_mtime_ns, (run / "eval.json").read_text(), (run / "meta.json").read_text()

    before = untouched()
    code, _, err = run_main(capsys, "train", "--resume", str(run), "--quiet")
    assert code == 0 and "nothing to do" in err and untouched() == before
    # other eval settings: evaluated again (the earlier evaluation kept), still not trained again
    code, _, _ = run_main(capsys, "train", "--resume", str(run), "eval.n=4", "--quiet")
    assert code == 0 and RunFolder(run).evaluation().n == 4 and len(list((run / "eval-history").iterdir())) == 2
    assert (run / "final.pt").stat().st_mtime_ns == before[0]
    # more epochs: trained on, then evaluated
    code, out, _ = run_main(capsys, "train", "--resume", str(run), "train.epochs=3", "--quiet")
    assert code == 0 and "epoch 3/3" in out and [m["epoch"] for m in RunFolder(run).metrics()] == [1, 2, 3]


def test_eval_of_an_export_leaves_it_as_shared_and_out_chooses_the_folder(cli_run, image_folder, tmp_path, capsys,
                                                                          monkeypatch):
    from ibrar.errors import InputError
    from ibrar.run_eval import run_evaluation

    export = tmp_path / "hub" / "shared"
    assert main(["export", str(cli_run), str(export)]) == 0
    card, evaluation = (export / "README.md").read_bytes(), (export / "eval.json").read_bytes()
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(capsys, "eval", str(export), "--attacks", "pgd2", "--n", "4", "--device", "cpu",
                            "--quiet", "--data-root", str(image_folder))
    assert code == 0 and "runs/eval-shared" in err
    assert (export / "README.md").read_bytes() == card and (export / "eval.json").read_bytes() == evaluation
    assert not (export / "eval-history").exists()
    assert json.loads((tmp_path / "runs" / "eval-shared" / "eval.json").read_text())["n"] == 4
    before = (cli_run / "eval.json").read_bytes()
    code, _, _ = run_main(capsys, "eval", str(cli_run), "--attacks", "pgd2", "--n", "4", "--device", "cpu",
                          "--quiet", "--data-root", str(image_folder), "--out", str(tmp_path / "mine"))
    assert code == 0 and (cli_run / "eval.json").read_bytes() == before
    assert json.loads((tmp_path / "mine" / "eval.json").read_text())["attacks"][0]["name"] == "pgd2"
    with pytest.raises(InputError, match="give out_dir"):
        run_evaluation(export, data_root=image_folder, attacks=["fgsm"], n=4)
