"""`ibrar export` and `ibrar.load_pretrained`: a finished run becomes a Hub-style folder (safetensors, config,
model card) that loads back bit-identically, channel mask included, and refuses pickles and mismatches."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
import yaml

import ibrar
from conftest import tiny_config
from ibrar.checkpoint import CheckpointError
from ibrar.cli import main
from ibrar.config import build_config
from ibrar.export import ExportError, export_run
from ibrar.integrity import CorruptWeightsError
from ibrar.loading import load_trained
from ibrar.run_eval import evaluate_run
from ibrar.train import train

EXPECTED_FILES = {"model.safetensors", "config.json", "config.yaml", "README.md", "eval.json", "metrics.jsonl",
                  "meta.json"}


@pytest.fixture(scope="module")
def run_dir(image_folder, tmp_path_factory) -> Path:
    """A finished, evaluated run of a small CNN with the paper's channel mask (a quarter of block2 dropped)."""
    folder = tmp_path_factory.mktemp("export-run") / "run"
    config = build_config(tiny_config(image_folder, train={"epochs": 1, "eval_pgd_steps": 0, "info_plane_every": 0},
                                      mask={"enabled": True, "drop_fraction": 0.25, "final_fit_batches": 2}))
    train(config, folder, quiet=True)
    evaluate_run(folder, attacks=["fgsm"], n=8, quiet=True, large_eps_check=False)
    return folder


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory) -> Path:
    return export_run(run_dir, tmp_path_factory.mktemp("export") / "model")


def test_export_follows_the_hub_layout_with_safetensors_only(exported):
    names = {p.name for p in exported.iterdir()}
    assert EXPECTED_FILES <= names
    assert not [n for n in names if n.endswith((".pt", ".bin", ".pth", ".pkl"))]
    hub = json.loads((exported / "config.json").read_text())
    assert hub["library_name"] == "ibrar" and hub["architecture"] == "small_cnn" and hub["output"] == "logits"
    assert hub["run_config"]["data"]["root"] is None  # a folder on the training machine means nothing elsewhere
    assert yaml.safe_load((exported / "config.yaml").read_text())["mask"]["enabled"] is True


def test_the_run_records_its_data_root_and_the_export_leaves_it_behind(run_dir, exported):
    assert "data_root" in json.loads((run_dir / "meta.json").read_text())
    meta = json.loads((exported / "meta.json").read_text())
    assert "data_root" not in meta and meta["seed"] == 0  # the rest of the record travels


def test_load_pretrained_round_trips_bit_identical_logits_with_the_mask(run_dir, exported):
    original = load_trained(run_dir)[0].model
    loaded = ibrar.load_pretrained(exported)
    assert not loaded.training
    x = torch.rand(6, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(original(x), loaded(x))
    mask = loaded.channel_mask
    assert mask.dropped == original.channel_mask.dropped and len(mask.dropped) == 4
    with torch.no_grad():  # the mask really acts at evaluation: without it the logits change
        mask.enabled = False
        unmasked = loaded(x)
        mask.enabled = True
        assert not torch.equal(unmasked, loaded(x))


def test_the_mask_travels_with_the_model(exported):
    model = ibrar.load_pretrained(exported)
    assert {"channel_mask.mask", "channel_mask.step"} <= set(model.state_dict())
    model.to(torch.float64)  # .to() reaches the mask's buffer: it is a submodule
    assert model.channel_mask.mask.dtype == torch.float64


def test_model_card_has_hub_front_matter_and_the_evaluation(exported, run_dir):
    text = (exported / "README.md").read_text()
    _, front, body = text.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert meta["library_name"] == "ibrar" and "adversarial-robustness" in meta["tags"]
    assert meta["metrics"] == ["accuracy"] and meta["pipeline_tag"] == "image-classification"
    evaluation = json.loads((run_dir / "eval.json").read_text())
    metrics = meta["model-index"][0]["results"][0]["metrics"]
    assert metrics[0]["value"] == round(100 * evaluation["clean"], 2)
    assert metrics[1]["name"].startswith("fgsm accuracy (eps=8/255") and "8 test examples" in metrics[1]["name"]
    assert "## Training" in body and "channel mask: drops the 25%" in body and "| fgsm |" in body
    hub = pytest.importorskip("huggingface_hub")
    card = hub.ModelCard(text)
    assert card.data.library_name == "ibrar" and card.data.eval_results[0].metric_type == "accuracy"


def _copy(exported: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(exported, tmp_path / "copy"))


class _Bomb:
    """Unpickling this would create a file: proof that a refused pickle was never executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickle_placed_in_an_export_is_refused_and_never_run(exported, tmp_path):
    folder = _copy(exported, tmp_path)
    marker = tmp_path / "executed"
    with open(folder / "pytorch_model.bin", "wb") as f:
        pickle.dump(_Bomb(marker), f)
    with pytest.raises(ExportError, match=r"pickled files \['pytorch_model.bin'\]"):
        ibrar.load_pretrained(folder)
    (folder / "pytorch_model.bin").unlink()
    torch.save({"model": _Bomb(marker)}, folder / "model.safetensors")  # a pickle under the safetensors name
    with pytest.raises(CorruptWeightsError, match="model.safetensors is corrupt"):  # not the bytes exported
        ibrar.load_pretrained(folder)
    (folder / "model.safetensors.sha256").unlink()  # as in an export from before digests
    with pytest.raises(ExportError, match="not a valid safetensors file"):
        ibrar.load_pretrained(folder)
    assert not marker.exists()


def test_the_weights_file_alone_is_refused_naming_what_to_give(exported, tmp_path):
    with pytest.raises(ExportError, match=f"give the export folder {exported}$"):
        ibrar.load_pretrained(exported / "model.safetensors")
    alone = tmp_path / "weights.safetensors"
    shutil.copy(exported / "model.safetensors", alone)
    with pytest.raises(ExportError, match=r"weights only.*--model MODULE:CALLABLE --weights FILE"):
        load_trained(alone)
    assert main(["eval", str(exported / "model.safetensors"), "--attacks", "fgsm", "--n", "4"]) == 2


def test_loading_names_the_shapes_and_the_architecture_that_do_not_match(exported, tmp_path):
    folder = _copy(exported, tmp_path)
    hub = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**hub, "num_classes": 7}))
    with pytest.raises(CheckpointError, match=r"classifier\.weight: checkpoint \(4, \d+\) vs model \(7, \d+\)"):
        ibrar.load_pretrained(folder)
    wrong = {**hub, "architecture": "resnet18"}
    wrong["run_config"] = {**hub["run_config"], "model": {**hub["run_config"]["model"], "name": "resnet18"}}
    (folder / "config.json").write_text(json.dumps(wrong))
    with pytest.raises(ExportError, match="architecture 'small_cnn' but config.json says 'resnet18'"):
        ibrar.load_pretrained(folder)


def test_cli_export_then_eval_and_plot_accept_the_folder(run_dir, image_folder, tmp_path, capsys):
    out = tmp_path / "shared"
    assert main(["export", str(run_dir), str(out), "--name", "tiny-ibrar"]) == 0
    assert "# tiny-ibrar" in (out / "README.md").read_text()
    assert main(["export", str(run_dir), str(out)]) == 2
    assert "already holds files" in capsys.readouterr().err
    assert main(["eval", str(out), "--attacks", "fgsm", "--n", "8", "--data-root", str(image_folder),
                 "--no-large-eps-check", "--quiet", "--out", str(tmp_path / "evaluated")]) == 0
    evaluated = json.loads((tmp_path / "evaluated" / "eval.json").read_text())
    assert evaluated["checkpoint"] == str(out / "model.safetensors")
    assert main(["plot", "confusion", str(out), "--n", "8", "--data-root", str(image_folder),
                 "--out", str(tmp_path / "conf")]) == 0
    assert (tmp_path / "conf.png").is_file()


def test_export_refuses_an_unfinished_run(run_dir, tmp_path):
    unfinished = Path(shutil.copytree(run_dir, tmp_path / "unfinished"))
    (unfinished / "final.pt").unlink()
    with pytest.raises(ExportError, match="no final.pt"):
        export_run(unfinished, tmp_path / "out")


def test_export_of_an_export_or_a_folder_without_a_run_names_what_it_is(exported, tmp_path):
    with pytest.raises(ExportError, match="is an `ibrar export` folder already") as refused:
        export_run(exported, tmp_path / "out")
    assert "--resume" not in str(refused.value)  # an export is not an interrupted run
    (tmp_path / "notes").mkdir()
    with pytest.raises(ExportError, match=r"holds no run \(no config.yaml\)"):
        export_run(tmp_path / "notes", tmp_path / "out")


def test_the_export_names_no_local_path_and_its_card_says_where_the_mask_applies(run_dir, exported):
    assert json.loads((run_dir / "eval.json").read_text())["checkpoint"].startswith("/")
    assert json.loads((exported / "eval.json").read_text())["checkpoint"] == "final.pt"
    card = (exported / "README.md").read_text()
    assert "least label-informative channels, applied at evaluation" in card
    from ibrar.export import describe_method

    config = build_config({"mask": {"enabled": True, "at_eval": False}})
    assert any("training only (not applied at evaluation)" in line for line in describe_method(config, None, False))


def test_overwrite_replaces_an_earlier_export_only_never_the_run_or_other_files(run_dir, exported, tmp_path):
    parent = Path(shutil.copytree(run_dir, tmp_path / "parent" / "run")).parent
    (parent / "notes.txt").write_text("keep")
    with pytest.raises(ExportError, match="not the run folder or a folder holding it"):
        export_run(parent / "run", parent, overwrite=True)
    assert (parent / "run" / "final.pt").is_file() and (parent / "notes.txt").read_text() == "keep"
    with pytest.raises(ExportError, match="not an ibrar export"):
        export_run(run_dir, parent, overwrite=True)
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(ExportError, match="is a file"):
        export_run(run_dir, tmp_path / "a-file")
    again = export_run(run_dir, Path(shutil.copytree(exported, tmp_path / "again")), overwrite=True)
    from safetensors.torch import load_file as read_tensors

    ours, theirs = read_tensors(again / "model.safetensors"), read_tensors(exported / "model.safetensors")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_an_official_profile_run_with_a_paper_mask_exports_and_loads_as_it_trained(image_folder, tmp_path):
    """The stored config has its profile applied already: loading must not apply it again (it would turn the
    run's mask.rule=paper back into the official rule, which the model does not apply at evaluation)."""
    config = build_config(tiny_config(image_folder, profile="official", mask={"enabled": True, "drop_fraction": 0.25,
                                                                              "final_fit_batches": 2},
                                      train={"epochs": 1, "eval_pgd_steps": 0, "info_plane_every": 0}),
                          ["mask.rule=paper"])  # an override, which comes after the profile
    assert config.mask.rule == "paper"
    train(config, tmp_path / "run", quiet=True)
    out = export_run(tmp_path / "run", tmp_path / "export")
    run_bundle, _, _ = load_trained(tmp_path / "run")
    bundle, loaded, _ = load_trained(out)
    assert loaded.mask.rule == "paper" and bundle.mask.at_eval and bundle.mask.dropped == run_bundle.mask.dropped
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(bundle.model(x), run_bundle.model(x))
