"""Profiles: every shipped config gives the paper's text by default and the authors' code with
`profile=official` (METHOD.md section 4), in the layers file -> profile -> command-line overrides."""

from __future__ import annotations

import re

import pytest
import yaml

from ibrar.build import check_model_config
from ibrar.config import (
    ConfigError,
    build_config,
    dump_config,
    load_config,
    shipped_configs,
    shipped_configs_dir,
)

RUNS = [name for name in shipped_configs() if not name.rsplit("/", 1)[-1].startswith("base-")]
ADVERSARIAL = ("pgd_at", "trades", "mart")


def test_every_shipped_config_is_checked():
    assert len(RUNS) >= 70
    assert "paper/table1-pgd_at-ibrar.yaml" in RUNS and "cpu/table4-vgg16-6-ibrar.yaml" in RUNS


@pytest.mark.parametrize("name", RUNS)
def test_the_official_profile_gives_the_authors_settings(name):
    config = load_config(name, ["profile=official"])
    method = config.method.name
    if method in ADVERSARIAL:
        assert config.method.eps == 0.03
        assert config.method.alpha == pytest.approx(0.0069)  # 0.03 / 10 * 2.3
    if method == "trades":  # the weight their code trains with, recorded as the run's beta
        assert config.method.variant == "official" and config.method.beta == 0.5
    if method == "mart":
        assert config.method.beta == 0.5 and config.optim.schedule == "none"
    if method in ("trades", "mart") and config.ib.enabled:
        assert config.ib.label_kernel == "gaussian" and config.ib.passes == "both"
    if method in ("ce", "vib"):
        assert config.optim.momentum == 0.9 and config.optim.weight_decay == 0.0
    if config.mask.enabled:
        assert config.mask.rule == "official"
    assert config.train.post_step_forward  # their scripts' train-mode forward after each update
    check_model_config(config)


@pytest.mark.parametrize("name", RUNS)
def test_the_default_profile_gives_the_paper_text(name):
    config = load_config(name)
    method = config.method.name
    assert config.profile == "paper"
    assert not config.train.post_step_forward
    if method in ADVERSARIAL:
        assert (config.method.eps, config.method.alpha, config.method.steps) == (8 / 255, 2 / 255, 10)
    assert config.method.variant == "standard"
    if method == "mart":
        assert config.method.beta == 6.0 and config.optim.schedule == "step"
    if config.mask.enabled:
        assert config.mask.rule == "paper" and config.mask.drop_fraction == 0.05
    if config.ib.enabled and "hbar" not in name:  # HBaR's own Gaussian label kernel is HBaR's setting
        assert config.ib.label_kernel == "linear" and config.ib.passes == "train"
    if name.startswith("paper/"):
        o = config.optim
        assert (o.lr, o.momentum, o.weight_decay, o.schedule, o.step_size, o.gamma) == (0.01, 0.0, 0.01, "step", 20,
                                                                                       0.2)
        assert (config.train.epochs, config.data.batch_size) == (60, 100)


OPTIMIZER_KEYS = re.compile(r"\b(momentum|weight_decay|schedule):")


@pytest.mark.parametrize("name", shipped_configs())
def test_a_line_where_paper_text_and_authors_code_differ_says_whose_setting_it_is(name):
    for line in (shipped_configs_dir() / name).read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        values = yaml.safe_load(line)
        for section, chosen in values.items() if isinstance(values, dict) else ():
            if section == "optim":
                departs = (chosen.get("momentum", 0.0), chosen.get("weight_decay", 0.01)) != (0.0, 0.01) or \
                    chosen.get("schedule", "step") != "step"
            elif section == "mask":
                departs = chosen.get("enabled", False)  # the mask's rule is one of the two differences
            elif section == "method":
                departs = chosen.get("name") in ("trades", "mart") or "eps" in chosen
            else:
                continue
            if departs:
                assert "paper text" in line and ("authors' code" in line or "neither" in line), (name, line)


def test_the_profile_overrides_the_file_and_the_command_line_overrides_the_profile():
    name = "paper/table1-pgd_at-ibrar.yaml"
    assert load_config(name, ["profile=official", "method.alpha=0.01"]).method.alpha == 0.01
    # an eps given on the command line carries the authors' step rule with it
    assert load_config(name, ["profile=official", "method.eps=0.05"]).method.alpha == pytest.approx(0.05 / 10 * 2.3)
    # and so do the attack's steps: the authors' loader takes eps / steps * 2.3
    assert load_config(name, ["profile=official", "method.steps=20"]).method.alpha == pytest.approx(0.03 / 20 * 2.3)
    assert load_config(name, ["profile=official", "mask.rule=paper"]).mask.rule == "paper"


def test_a_profile_named_in_the_file_applies_too(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(f"extends: {shipped_configs_dir() / 'paper' / 'table1-mart.yaml'}\nprofile: official\n")
    config = load_config(path)
    assert config.method.beta == 0.5 and config.method.eps == 0.03


def test_a_stored_resolved_config_is_not_profiled_twice(tmp_path):
    config = load_config("paper/table1-mart-ibrar.yaml", ["profile=official", "method.eps=0.05", "method.beta=2"])
    stored = yaml.safe_load(dump_config(config))
    assert build_config(stored, resolved=True) == config
    # the file says it is resolved, so a config.yaml given back to `ibrar train` trains the run's own settings
    assert build_config(stored) == config
    path = tmp_path / "config.yaml"
    path.write_text(dump_config(config))
    assert load_config(path) == config
    assert load_config(path, ["seed=3"]).method.beta == 2
    unmarked = {key: value for key, value in stored.items() if key != "resolved"}
    assert build_config(unmarked).method.eps == 0.03  # without the mark, the profile is applied as for any file
    assert build_config(unmarked).method.beta == 0.5


def test_a_resolved_config_refuses_a_profile_change_and_a_bad_mark():
    stored = yaml.safe_load(dump_config(load_config("paper/table1-pgd_at.yaml", ["profile=official"])))
    with pytest.raises(ConfigError, match="already has its profile applied"):
        build_config(stored, ["profile=paper"])
    with pytest.raises(ConfigError, match="resolved: ibrar writes"):
        build_config({**stored, "resolved": "yes"})


@pytest.mark.parametrize("name", ["configs/cpu/table1-pgd_at.yaml", "cpu/table1-pgd_at.yaml", "cpu/table1-pgd_at"])
def test_shipped_configs_are_found_by_name_from_any_folder(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_config(name).name == "cpu-table1-pgd_at"
