"""The run configuration: every mistake is a ConfigError naming the key and what it accepts, before work."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import tiny_config
from ibrar.build import check_model_config
from ibrar.config import (
    ConfigError,
    RunConfig,
    build_config,
    dump_config,
    load_config,
    parse_override,
    shipped_configs_dir,
)
from ibrar.train import train

CONFIGS = shipped_configs_dir()
SHIPPED = sorted(p for p in CONFIGS.rglob("*.yaml"))


def config_error(data: dict | None = None, overrides: list[str] | None = None) -> str:
    with pytest.raises(ConfigError) as err:
        build_config(data, overrides)
    return str(err.value)


# ---- keys, types and ranges ----------------------------------------------------------------------------


def test_unknown_top_level_key_names_the_valid_keys():
    message = config_error({"modle": {"width": 1}})
    assert "modle: unknown key" in message
    assert "model" in message and "optim" in message


def test_unknown_nested_key_names_the_valid_keys_of_its_section():
    message = config_error({"model": {"widht": 0.5}})
    assert "model.widht: unknown key" in message
    assert "width" in message and "ib_layers" in message


@pytest.mark.parametrize(("override", "key"), [
    ("train.epochs=abc", "train.epochs"),
    ("data.batch_size=[1, 2]", "data.batch_size"),
    ("ib.enabled=maybe", "ib.enabled"),
    ("model=3", "model"),
])
def test_wrong_type_names_the_key(override, key):
    assert f"{key}:" in config_error(overrides=[override])


@pytest.mark.parametrize(("override", "key"), [
    ("method.eps=-0.1", "method.eps"),
    ("method.eps=2", "method.eps"),
    ("ib.beta=-1", "ib.beta"),
    ("ib.alpha=-0.5", "ib.alpha"),
    ("mask.drop_fraction=1", "mask.drop_fraction"),
    ("mask.drop_fraction=-0.01", "mask.drop_fraction"),
    ("train.epochs=0", "train.epochs"),
    ("optim.lr=0", "optim.lr"),
    ("data.batch_size=0", "data.batch_size"),
])
def test_out_of_range_value_names_the_key_and_the_bound(override, key):
    message = config_error(overrides=[override])
    assert f"{key}:" in message
    assert "greater than" in message or "less than" in message


@pytest.mark.parametrize(("override", "key", "words"), [
    ("ib.sigma=.inf", "ib.sigma", "finite"),  # every HSIC would be 0: IB-RAR off without a word
    ("optim.lr=.nan", "optim.lr", "finite"),
    ("ib.layers=[]", "ib.layers", "non-empty list"),
    ("data.batch_size=1", "data.batch_size", "greater than or equal to 2"),  # BatchNorm and HSIC need two
])
def test_values_that_would_break_a_run_later_or_silently_are_config_errors(override, key, words):
    message = config_error(overrides=["ib.enabled=true", override])
    assert f"{key}:" in message and words in message


def test_every_problem_is_listed_at_once():
    message = config_error(overrides=["method.eps=-1", "ib.beta=-1", "model.widht=2"])
    assert "method.eps" in message and "ib.beta" in message and "model.widht" in message


@pytest.mark.parametrize(("override", "choices"), [
    ("method.name=fgsm_at", ["ce", "pgd_at", "trades", "mart", "vib"]),
    ("data.name=mnist", ["cifar10", "imagefolder"]),
    ("ib.estimator=mine", ["nocco"]),
    ("device=tpu", ["cpu", "cuda"]),
])
def test_unknown_name_lists_the_valid_choices(override, choices):
    message = config_error(overrides=[override])
    assert override.split("=")[0] + ":" in message
    for choice in choices:
        assert repr(choice) in message


def test_unknown_model_name_lists_the_registered_models():
    with pytest.raises(ConfigError, match=r"model\.name: expected one of .*'small_cnn'.*got 'vgg17'"):
        check_model_config(build_config(overrides=["model.name=vgg17"]))


@pytest.mark.parametrize(("overrides", "key"), [
    (["ib.enabled=true", "ib.layers=[block9]"], "ib.layers"),
    (["model.ib_layers=[block9]"], "model.ib_layers"),
    (["model.robust_layers=[fc1, nope]"], "model.robust_layers"),
    (["mask.enabled=true", "model.last_conv=block9"], "model.last_conv"),
])
def test_a_layer_the_model_lacks_names_the_key_and_the_valid_layers(overrides, key):
    config = build_config(overrides=["model.name=small_cnn", "model.width=0.25", *overrides])
    with pytest.raises(ConfigError, match=rf"{key}: .*not found.*valid names: .*block1") as err:
        check_model_config(config)
    assert "block9" in str(err.value) or "nope" in str(err.value)


def test_model_errors_come_before_any_data_is_read(tmp_path):
    data = tiny_config(tmp_path / "no-data", model={"name": "vgg17"})
    with pytest.raises(ConfigError, match="model.name"):
        train(build_config(data), tmp_path / "run", quiet=True)
    assert not (tmp_path / "run").exists()


def test_mask_on_a_layer_without_feature_maps_is_a_config_error():
    config = build_config(overrides=["model.name=small_cnn", "mask.enabled=true", "model.last_conv=fc1"])
    with pytest.raises(ConfigError, match="fc1.*feature maps"):
        check_model_config(config)


def test_official_rule_with_mask_at_eval_is_refused():
    message = config_error(overrides=["mask.enabled=true", "mask.rule=official", "mask.at_eval=true"])
    assert "mask.at_eval" in message


# ---- overrides ---------------------------------------------------------------------------------------


def test_dotted_overrides_set_nested_values_read_as_yaml():
    config = build_config({"train": {"epochs": 5}}, ["train.epochs=3", "ib.layers=[fc1, block2]",
                                                      "data.augment=false", "optim.lr=1e-3", "name=x"])
    assert config.train.epochs == 3
    assert config.ib.layers == ["fc1", "block2"]
    assert config.data.augment is False
    assert config.optim.lr == pytest.approx(1e-3)
    assert config.name == "x"


@pytest.mark.parametrize(("text", "value"), [("8/255", 8 / 255), ("2 / 255", 2 / 255), ("0.5/2", 0.25)])
def test_fractions_are_accepted_for_eps_and_alpha(text, value):
    config = build_config(overrides=[f"method.eps={text}", f"method.alpha={text}", f"eval.eps={text}"])
    assert config.method.eps == pytest.approx(value)
    assert config.method.alpha == pytest.approx(value)
    assert config.eval.eps == pytest.approx(value)


def test_division_by_zero_is_a_config_error():
    assert "method.eps" in config_error(overrides=["method.eps=8/0"])


@pytest.mark.parametrize("item", ["train.epochs", "=3", "train..epochs=3", ".epochs=3"])
def test_malformed_override_is_a_config_error(item):
    with pytest.raises(ConfigError, match="override"):
        parse_override(item)


def test_override_into_a_value_is_a_config_error():
    with pytest.raises(ConfigError, match="'name' is a value, not a section"):
        build_config({"name": "x"}, ["name.first=3"])


# ---- files -------------------------------------------------------------------------------------------


def test_extends_reads_the_parent_first_then_overlays(tmp_path):
    (tmp_path / "base.yaml").write_text("name: base\nmethod: {name: pgd_at, eps: 8/255, steps: 7}\n"
                                        "train: {epochs: 9}\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "child.yaml").write_text("extends: ../base.yaml\nname: child\nmethod: {steps: 3}\n")
    config = load_config(tmp_path / "sub" / "child.yaml", ["train.epochs=2"])
    assert config.name == "child"
    assert config.method.name == "pgd_at" and config.method.steps == 3
    assert config.method.eps == pytest.approx(8 / 255)
    assert config.train.epochs == 2


def test_extends_cycle_and_missing_parent_are_config_errors(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("extends: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="nowhere.yaml does not exist"):
        load_config(tmp_path / "c.yaml")


@pytest.mark.parametrize("text", ["[1, 2]", "name: [unclosed", "42"])
def test_a_file_that_is_not_a_mapping_is_a_config_error(text, tmp_path):
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(tmp_path / "bad.yaml")


def test_missing_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_dumped_config_reads_back_identical():
    config = build_config(overrides=["method.name=trades", "method.eps=8/255", "ib.enabled=true",
                                     "ib.layers=[fc1]", "eval.reference={clean: 0.8}"])
    assert build_config(yaml.safe_load(dump_config(config))) == config


@pytest.mark.parametrize("path", SHIPPED, ids=[str(p.relative_to(CONFIGS)) for p in SHIPPED])
def test_every_shipped_config_loads_and_names_real_layers(path):
    config = load_config(path)
    assert isinstance(config, RunConfig)
    check_model_config(config)


def test_shipped_configs_are_there():
    assert len(SHIPPED) >= 30
    assert (CONFIGS / "cpu" / "table1-pgd_at-ibrar.yaml") in SHIPPED


def test_official_profile_switches_to_the_authors_settings():
    config = build_config(overrides=["profile=official", "method.name=mart"])
    assert config.method.variant == "official" and config.mask.rule == "official"
    assert config.method.beta == pytest.approx(0.5) and config.optim.schedule == "none"
    assert config.ib.label_kernel == "gaussian"
    assert build_config(overrides=["profile=official", "method.name=mart", "method.beta=3"]).method.beta == 3


# ---- fuzz --------------------------------------------------------------------------------------------

SECTION_KEYS = {name: list(getattr(field.annotation, "model_fields", None) or []) or None
                for name, field in RunConfig.model_fields.items()}
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["8/255", "1/0", "nocco", "all", "robust", "cpu"]))
VALUES = st.recursive(
    SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner,
                                                                                  max_size=3)),
    max_leaves=6)
KEYS = st.one_of(st.sampled_from(sorted(SECTION_KEYS)), st.text(max_size=8))


@st.composite
def config_dicts(draw) -> dict:
    data = {}
    for key in draw(st.lists(KEYS, max_size=5)):
        inner = SECTION_KEYS.get(key)
        if inner and draw(st.booleans()):
            data[key] = draw(st.dictionaries(st.one_of(st.sampled_from(inner), st.text(max_size=6)), VALUES,
                                             max_size=4))
        else:
            data[key] = draw(VALUES)
    return data


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=config_dicts(), overrides=st.lists(st.text(max_size=20), max_size=3))
def test_fuzzed_configs_give_a_config_or_a_config_error(data, overrides):
    try:
        config = build_config(data, overrides)
    except ConfigError as err:
        assert str(err)
        return
    assert isinstance(config, RunConfig)
