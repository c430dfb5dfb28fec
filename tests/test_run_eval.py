"""`ibrar eval` on a run: the reference table is printed only beside a run it can be compared with, an
evaluation given a time limit refuses to start when its estimate is over it, an unfinished run is said to be one,
and a data root given beats the run's own."""

from __future__ import annotations

import pytest

from ibrar.config import load_config
from ibrar.run_eval import reference_applies


def test_the_quickstart_reference_is_shown_beside_the_quickstart_and_its_ce_twin():
    assert reference_applies(load_config("configs/quickstart.yaml"))
    assert reference_applies(load_config("quickstart-ce.yaml"))
    # the IB and mask settings are what the pair compares; speed knobs and threads change no model
    assert reference_applies(load_config("configs/quickstart.yaml", ["ib.beta=0.1", "mask.enabled=false",
                                                                     "train.threads=2", "data.root=/x"]))


def test_the_quickstart_reference_is_hidden_beside_another_model_data_or_schedule():
    for override in ("model.name=small_cnn", "data.train_subset=1000", "train.epochs=2", "optim.lr=0.1",
                     "method.name=pgd_at", "seed=1"):
        assert not reference_applies(load_config("configs/quickstart.yaml", [override])), override


def test_a_reference_without_its_config_is_shown_as_the_config_gives_it():
    config = load_config(None, ["eval.reference={clean: 0.5}"])
    assert reference_applies(config)
    assert not reference_applies(load_config(None))
    unknown = load_config(None, ["eval.reference={clean: 0.5}", "eval.reference_config=no-such-config.yaml"])
    assert not reference_applies(unknown)


def test_an_evaluation_over_its_time_limit_refuses_before_any_attack_and_writes_nothing(image_folder, tmp_path,
                                                                                       capsys):
    """The GPU kit starts an evaluation piece only if ibrar's estimate fits what the call has left."""
    from conftest import tiny_config
    from ibrar.config import build_config
    from ibrar.run_eval import EvaluationWouldNotFit, run_evaluation
    from ibrar.run_folder import RunFolder
    from ibrar.train import train

    folder = tmp_path / "run"
    train(build_config(tiny_config(image_folder, train={"epochs": 1, "eval_pgd_steps": 0, "info_plane_every": 0})),
          folder, quiet=True)
    RunFolder(folder).eval_file.unlink(missing_ok=True)
    with pytest.raises(EvaluationWouldNotFit) as refused:
        run_evaluation(folder, attacks=["fgsm", "pgd2"], n=16, quiet=True, large_eps_check=False, time_limit_s=0.0)
    assert refused.value.seconds > 0 and refused.value.limit == 0.0 and "estimated at about" in str(refused.value)
    assert not RunFolder(folder).eval_file.exists()
    assert "estimated time about" in capsys.readouterr().out  # the estimate it refused on was printed
    result, _ = run_evaluation(folder, attacks=["fgsm", "pgd2"], n=16, quiet=True, large_eps_check=False,
                               time_limit_s=1e6)  # the folder's lock was released: a limit that fits runs
    assert [a["name"] for a in result["attacks"]] == ["fgsm", "pgd2"] and RunFolder(folder).eval_file.is_file()
    # each piece's estimate beside its measured time, so the estimator can be checked piece by piece (on a GPU too)
    pieces = result["estimate"]["pieces"]
    assert [p["piece"] for p in pieces] == ["fgsm", "pgd2"]
    assert all(p["estimated_s"] > 0 and p["seconds"] > 0 and p["examples"] <= 16 for p in pieces)


def _trained(image_folder, folder, **train_args):
    from conftest import tiny_config
    from ibrar.config import build_config
    from ibrar.train import train

    config = build_config(tiny_config(image_folder, train={"epochs": 2, "eval_pgd_steps": 0, "info_plane_every": 0}))
    train(config, folder, quiet=True, **train_args)
    return config


def test_an_interrupted_run_is_evaluated_with_a_warning_that_it_has_not_finished(image_folder, tmp_path, capsys):
    from ibrar.run_eval import run_evaluation
    from ibrar.run_folder import RunFolder

    folder = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        _trained(image_folder, folder, stop_at=0.0)  # stopped after its first batch, as SIGTERM would
    assert not RunFolder(folder).final_file.exists()
    result, table = run_evaluation(folder, attacks=["fgsm"], n=8, quiet=True, large_eps_check=False)
    assert "has not finished training" in capsys.readouterr().err  # said before any attack runs
    assert "has not finished training" in table and f"ibrar train --resume {folder}" in table
    assert any("of 2 epochs" in w for w in result["model_warnings"])


def test_a_given_data_root_beats_the_runs_own_data_root_that_has_moved(image_folder, tmp_path):
    import shutil

    from ibrar.run_eval import run_evaluation

    data = shutil.copytree(image_folder, tmp_path / "data")
    folder = tmp_path / "run"
    _trained(data, folder)  # data.root in its config.yaml
    moved = data.rename(tmp_path / "moved")
    result, _ = run_evaluation(folder, data_root=moved, attacks=["fgsm"], n=8, quiet=True, large_eps_check=False)
    assert result["n"] == 8 and not result.get("model_warnings")
