"""The RobustBench contract and interop: every ibrar model takes [0, 1] images, returns logits and holds its
normalisation; a trained one goes through `robustbench.eval.benchmark` unchanged; `ibrar eval` evaluates a
RobustBench zoo model that is on disk; an evaluation becomes a RobustBench model card. Nothing is downloaded."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from ibrar.build import build_model
from ibrar.cli import main
from ibrar.config import build_config, load_config
from ibrar.evaluation_record import Evaluation
from ibrar.experiments.base import CONFIG_ROOT
from ibrar.interop import RobustBenchError, import_robustbench, robustbench_card, write_robustbench_card
from ibrar.loading import load_trained
from ibrar.models import create_model, list_models
from ibrar.train import train

try:
    import_robustbench()
    HAVE_ROBUSTBENCH = True
except RobustBenchError:
    HAVE_ROBUSTBENCH = False
needs_robustbench = pytest.mark.skipif(not HAVE_ROBUSTBENCH, reason="RobustBench is not installed "
                                       "(.ci/run installs it; pip install 'ibrar[robustbench]')")

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_cifar10(root: Path, per_batch: int = 16, n_test: int = 20, seed: int = 0) -> Path:
    """torchvision's on-disk CIFAR-10 (cifar-10-batches-py, str-keyed pickles as the originals decode), with a
    learnable tint per class."""
    rng = np.random.default_rng(seed)
    tints = rng.uniform(0.1, 0.9, size=(10, 3))
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in [*[(f"data_batch_{i}", per_batch) for i in range(1, 6)], ("test_batch", n_test)]:
        labels = rng.integers(0, 10, n)
        pixels = tints[labels][:, :, None, None] + 0.1 * rng.standard_normal((n, 3, 32, 32))
        data = (np.clip(pixels, 0, 1) * 255).astype(np.uint8).reshape(n, 3072)
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "data": data, "labels": labels.tolist(),
                         "filenames": [f"{i}.png" for i in range(n)]}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CIFAR10_CLASSES, "num_cases_per_batch": per_batch, "num_vis": 3072}, f)
    return root


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory) -> Path:
    return write_cifar10(tmp_path_factory.mktemp("cifar10"))


@pytest.fixture(scope="module")
def quickstart_run(cifar_root, tmp_path_factory) -> Path:
    """The quickstart config (VGG16, IB-RAR, channel mask) at a sixteenth of its width, one epoch."""
    config = load_config(CONFIG_ROOT / "quickstart.yaml", [
        "model.width=0.0625", "data.train_subset=null", "data.batch_size=20", "data.augment=false",
        "train.epochs=1", "train.eval_subset=0", "train.eval_pgd_steps=0", "train.info_plane_every=0",
        "mask.drop_fraction=0.25", "mask.final_fit_batches=2", "optim.lr=0.05", "device=cpu",
        "eval.eps=0.5"])  # a budget that breaks every point at once keeps AutoAttack's later stages idle (fast)
    run_dir = tmp_path_factory.mktemp("quickstart") / "run"
    train(config, run_dir, data_root=cifar_root, quiet=True)
    return run_dir


@pytest.fixture()
def offline(monkeypatch, cifar_root):
    keep_torchvision_offline(monkeypatch, cifar_root)


def keep_torchvision_offline(monkeypatch, root: Path) -> None:
    """torchvision checks the generated CIFAR-10 files against their own checksums (the real files' are
    built in), and may not download anything."""
    from torchvision.datasets import CIFAR10, utils

    folder = root / CIFAR10.base_folder

    def md5(name: str) -> str:
        return hashlib.md5((folder / name).read_bytes()).hexdigest()

    monkeypatch.setattr(CIFAR10, "train_list", [[name, md5(name)] for name, _ in CIFAR10.train_list])
    monkeypatch.setattr(CIFAR10, "test_list", [[name, md5(name)] for name, _ in CIFAR10.test_list])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5(CIFAR10.meta["filename"])})

    def no_download(*args, **kwargs):
        raise AssertionError(f"a download was attempted: {args}")

    monkeypatch.setattr(utils, "download_url", no_download)
    monkeypatch.setattr(utils, "download_and_extract_archive", no_download)


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_takes_unit_images_returns_logits_and_holds_its_normalisation(name):
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    model = create_model(name, num_classes=10, width=0.0625, mean=mean, std=std).eval()
    buffers = dict(model.named_buffers())
    assert torch.equal(buffers["normalize.mean"].flatten(), torch.tensor(mean))
    assert torch.equal(buffers["normalize.std"].flatten(), torch.tensor(std))
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
        plain = create_model(name, num_classes=10, width=0.0625).eval()
        plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("normalize.")})
        normalised = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
        reference = plain(normalised)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 10)
    torch.testing.assert_close(out, reference)


def test_a_vib_model_returns_logits_only():
    config = build_config({"model": {"name": "small_cnn", "width": 0.25}, "method": {"name": "vib"}})
    model = build_model(config, 10, 32).model.eval()
    with torch.no_grad():
        out = model(torch.rand(3, 3, 32, 32))
    assert isinstance(out, torch.Tensor) and out.shape == (3, 10)


def test_a_loaded_model_is_in_eval_mode_and_self_contained(quickstart_run):
    bundle, _, _ = load_trained(quickstart_run)
    model = bundle.model
    assert not model.training and model.channel_mask is bundle.mask and len(bundle.mask.dropped) > 0


@needs_robustbench
def relabel_to_half_right(cifar_root: Path, into: Path, model: torch.nn.Module, n: int) -> Path:
    """A copy of `cifar_root` whose first n test images carry the model's own prediction at even positions and
    another class at odd ones: exactly half right for the model as ibrar runs it, however well it trained."""
    from ibrar.data import load_split

    shutil.copytree(cifar_root, into)
    with torch.no_grad():
        predicted = model(load_split("cifar10", cifar_root, "test").images[:n].float() / 255).argmax(1)
    batch_file = into / "cifar-10-batches-py" / "test_batch"
    batch = pickle.loads(batch_file.read_bytes())
    batch["labels"][:n] = [int(p) if i % 2 == 0 else (int(p) + 1) % 10 for i, p in enumerate(predicted)]
    batch_file.write_bytes(pickle.dumps(batch))
    return into


def test_robustbench_benchmark_accepts_a_quickstart_model_unchanged(quickstart_run, cifar_root, tmp_path,
                                                                     monkeypatch):
    import_robustbench()
    from robustbench.eval import benchmark

    model = load_trained(quickstart_run)[0].model
    root = relabel_to_half_right(cifar_root, tmp_path / "cifar10", model, n=12)
    keep_torchvision_offline(monkeypatch, root)
    # A large budget breaks every point in APGD-CE's first steps, so the later AutoAttack stages have nothing
    # left to attack and the test stays fast; the model passes through the same code as at 8/255.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clean, robust = benchmark(model, n_examples=12, dataset="cifar10", threat_model="Linf", eps=0.5,
                                  data_dir=str(root), device=torch.device("cpu"), batch_size=12)
    assert not [w for w in caught if "eval mode" in str(w.message)]
    assert clean == pytest.approx(0.5)  # RobustBench fed the model the images ibrar feeds it
    assert robust == 0.0  # eps = 0.5 leaves no robust point


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory) -> Path:
    """RobustBench's model_dir with Ding2020MMA (a WRN-28-4) planted as RobustBench itself stores it."""
    import_robustbench()
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    model_dir = tmp_path_factory.mktemp("zoo")
    torch.manual_seed(0)
    net = model_dicts[BenchmarkDataset.cifar_10][ThreatModel.Linf]["Ding2020MMA"]["model"]()
    (model_dir / "cifar10" / "Linf").mkdir(parents=True)
    torch.save(net.state_dict(), model_dir / "cifar10" / "Linf" / "Ding2020MMA.pt")
    return model_dir


@needs_robustbench
def test_ibrar_eval_evaluates_a_robustbench_zoo_model_on_disk(zoo_dir, cifar_root, tmp_path, offline, capsys):
    out = tmp_path / "zoo-eval"
    code = main(["eval", "--robustbench", "Ding2020MMA", "--model-dir", str(zoo_dir), "--data-root",
                 str(cifar_root), "--attacks", "fgsm", "--n", "4", "--no-large-eps-check", "--quiet",
                 "--out", str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    result = json.loads((out / "eval.json").read_text())
    assert result["n"] == 4 and result["attacks"][0]["name"] == "fgsm"
    assert result["checkpoint"] == str(zoo_dir / "cifar10" / "Linf" / "Ding2020MMA.pt")


@needs_robustbench
def test_a_zoo_model_not_on_disk_is_never_downloaded(tmp_path, capsys):
    code = main(["eval", "--robustbench", "Standard", "--model-dir", str(tmp_path), "--attacks", "fgsm"])
    err = capsys.readouterr().err
    assert code == 2 and "ibrar never downloads" in err and "Standard.pt does not exist" in err
    code = main(["eval", "--robustbench", "Ding2020MM", "--model-dir", str(tmp_path)])
    assert code == 2 and "did you mean ['Ding2020MMA']" in capsys.readouterr().err


def _evaluation(clean: float, autoattack: float | None) -> Evaluation:
    attacks = [{"name": "pgd10", "accuracy": 0.5, "params": {"eps": 8 / 255}}]
    if autoattack is not None:
        attacks.append({"name": "autoattack", "accuracy": autoattack, "params": {"eps": 8 / 255}})
    return Evaluation.from_dict({"n": 1000, "seed": 0, "clean": clean, "worst_case": 0.4, "attacks": attacks,
                                 "warnings": []})


def test_robustbench_card_has_the_fields_robustbench_keeps(tmp_path):
    config = build_config({"data": {"name": "cifar10"}})
    card = robustbench_card(_evaluation(0.8123, 0.45), config, "vgg16 (width 1)",
                            {"name": "IB-RAR", "venue": "arXiv"})
    assert card["clean_acc"] == "81.23" and card["autoattack_acc"] == "45.00" and card["reported"] == "45.00"
    assert card["eps"] == "8/255" and card["dataset"] == "cifar10" and card["additional_data"] is False
    assert card["number_forward_passes"] == 1 and card["name"] == "IB-RAR" and "1000 test examples" in card["footnote"]
    path = write_robustbench_card(card, "Xu2023IBRAR", tmp_path)
    assert path == tmp_path / "model_info" / "cifar10" / "Linf" / "Xu2023IBRAR.json"
    assert json.loads(path.read_text()) == card
    with pytest.raises(RobustBenchError, match="--attacks autoattack"):
        robustbench_card(_evaluation(0.8, None), config, "vgg16")
    with pytest.raises(RobustBenchError, match="unknown key 'paper'"):
        robustbench_card(_evaluation(0.8, 0.4), config, "vgg16", {"paper": "x"})


def test_ibrar_eval_writes_a_robustbench_card(quickstart_run, cifar_root, tmp_path, capsys):
    argv = ["eval", str(quickstart_run), "--data-root", str(cifar_root), "--n", "4", "--no-large-eps-check",
            "--quiet", "--robustbench-card", "Tiny2026", "--card-dir", str(tmp_path), "--card-field", "name=Tiny"]
    assert main([*argv, "--attacks", "fgsm"]) == 2
    assert "--attacks autoattack" in capsys.readouterr().err
    assert main([*argv, "--attacks", "autoattack"]) == 0
    card = json.loads((tmp_path / "model_info" / "cifar10" / "Linf" / "Tiny2026.json").read_text())
    result = json.loads((quickstart_run / "eval.json").read_text())
    assert card["clean_acc"] == f"{100 * result['clean']:.2f}" and card["name"] == "Tiny"
    assert card["autoattack_acc"] == f"{100 * result['attacks'][0]['accuracy']:.2f}"
    assert card["architecture"] == "vgg16 (width 0.0625)" and card["eps"] == "0.5"
