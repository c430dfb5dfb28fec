"""`ibrar eval` on a run: the reference table is printed only beside a run it can be compared with."""

from __future__ import annotations

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
