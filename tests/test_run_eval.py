"""`ibrar eval` on a run: the reference table is printed only beside a run it can be compared with, and an
evaluation given a time limit refuses to start when its estimate is over it."""

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
