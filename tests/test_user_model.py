"""Any PyTorch model through `ibrar eval --model MODULE:CALLABLE --weights FILE` and `ibrar.evaluate_model`:
the same numbers as `ibrar.evaluate.evaluate`, weights read safely, and the outputs users trip on caught."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import ibrar
from ibrar.cli import main
from ibrar.data import load_split
from ibrar.evaluate import evaluate
from ibrar.user_model import ModelSpecError, Normalized, build_user_model, check_model, parse_normalize

MODULE = textwrap.dedent('''
    import torch
    from torch import nn

    class Net(nn.Module):  # torchvision-like: a builder with num_classes, BatchNorm inside
        def __init__(self, num_classes=10, head=None):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                          nn.AdaptiveAvgPool2d(4), nn.Flatten())
            self.fc = nn.Linear(128, num_classes)
            self.head = head

        def forward(self, x):
            logits = self.fc(self.features(x))
            if self.head == "softmax":
                return logits.softmax(1)
            if self.head == "tuple":
                return logits, self.features(x)
            if self.head == "dict":
                return {"logits": logits, "features": self.features(x)}
            return logits

    def build(num_classes=10, head=None):
        return Net(num_classes, head)
''')
ATTACKS = ["fgsm", "pgd2"]
N = 16


@pytest.fixture(scope="module")
def user_model(tmp_path_factory) -> tuple[Path, Path]:
    """A user's own model file and its weights saved as safetensors by the user's own code."""
    folder = tmp_path_factory.mktemp("user")
    (folder / "mynet.py").write_text(MODULE)
    model = build_user_model(f"{folder / 'mynet.py'}:build", kwargs={"num_classes": 4})
    torch.manual_seed(0)
    for p in model.parameters():
        p.data.normal_(0, 0.3)
    save_file(model.state_dict(), str(folder / "net.safetensors"))
    return folder / "mynet.py", folder / "net.safetensors"


def cli_eval(capsys, user_model, image_folder, out: Path, *extra: str) -> tuple[int, str, str]:
    source, weights = user_model
    code = main(["eval", "--model", f"{source}:build", "--weights", str(weights), "--model-kwargs",
                 '{"num_classes": 4}', "--dataset", "imagefolder", "--data-root", str(image_folder), "--attacks",
                 ",".join(ATTACKS), "--n", str(N), "--device", "cpu", "--no-large-eps-check", "--out", str(out),
                 *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_model_gives_the_numbers_evaluate_gives_in_python(user_model, image_folder, tmp_path, capsys):
    code, out, err = cli_eval(capsys, user_model, image_folder, tmp_path, "--quiet")
    assert code == 0, err
    result = json.loads((tmp_path / "eval.json").read_text())
    model = build_user_model(f"{user_model[0]}:build", user_model[1], '{"num_classes": 4}')
    test = load_split("imagefolder", image_folder, "test")
    report = evaluate(model, test.images, test.labels, ATTACKS, n=N, seed=0)
    assert result["clean"] == report.clean and result["n"] == N
    assert [a["accuracy"] for a in result["attacks"]] == [report.result(a).accuracy for a in ATTACKS]
    from_python = ibrar.evaluate_model(model, dataset="imagefolder", data_root=image_folder, attacks=ATTACKS, n=N,
                                       out_dir=tmp_path / "py", device="cpu", quiet=True, large_eps_check=False)
    assert [a["accuracy"] for a in from_python["attacks"]] == [a["accuracy"] for a in result["attacks"]]
    assert "estimated time about" in out and "worst case" in out


def test_quiet_prints_one_line_per_attack_with_its_counts(user_model, image_folder, tmp_path, capsys):
    code, _, err = cli_eval(capsys, user_model, image_folder, tmp_path, "--quiet")
    assert code == 0
    for attack in json.loads((tmp_path / "eval.json").read_text())["attacks"]:
        lines = [line for line in err.splitlines() if line.startswith(f"{attack['name']}: ")]
        assert len(lines) == 1 and f"{attack['n_attacked']} examples attacked, {attack['n_robust']} robust" \
            in lines[0]


def test_bars_show_each_attack_with_its_robust_count(user_model, image_folder, tmp_path, capsys):
    code, _, err = cli_eval(capsys, user_model, image_folder, tmp_path)
    assert code == 0
    for attack in json.loads((tmp_path / "eval.json").read_text())["attacks"]:
        final = [s for s in re.split(r"[\r\n]", err) if s.startswith(f"{attack['name']}: 100%")]
        assert final and f"robust {attack['n_robust']}" in final[-1] and "evaluation left" in final[-1]


def test_a_torch_save_state_dict_loads_like_safetensors(user_model, tmp_path):
    source, weights = user_model
    model = build_user_model(f"{source}:build", weights, {"num_classes": 4})
    torch.save(model.state_dict(), tmp_path / "net.pt")
    again = build_user_model(f"{source}:build", tmp_path / "net.pt", {"num_classes": 4})
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(model(x), again(x)) and not again.training


def test_weights_that_do_not_fit_are_an_error_naming_model_kwargs(user_model):
    source, weights = user_model
    with pytest.raises(ModelSpecError, match="model-kwargs"):
        build_user_model(f"{source}:build", weights, {"num_classes": 7})


def test_a_softmax_model_gets_a_warning(user_model, image_folder, tmp_path, capsys):
    source, weights = user_model
    model = build_user_model(f"{source}:build", weights, {"num_classes": 4, "head": "softmax"})
    with pytest.warns(UserWarning, match="probabilities"):
        result = ibrar.evaluate_model(model, dataset="imagefolder", data_root=image_folder, attacks=["fgsm"], n=8,
                                      out_dir=tmp_path, device="cpu", quiet=True, large_eps_check=False)
    assert any("softmax" in w for w in result["model_warnings"]) and "WARNING (the model)" in result["table"]


def test_a_tuple_or_dict_output_is_refused_unless_the_logits_are_picked(user_model, image_folder, tmp_path, capsys):
    source, weights = user_model
    x = torch.rand(2, 3, 32, 32)
    with pytest.raises(ModelSpecError, match="--output INDEX"):
        check_model(build_user_model(f"{source}:build", weights, {"num_classes": 4, "head": "tuple"}), x)
    with pytest.raises(ModelSpecError, match=r"\['features', 'logits'\].*--output KEY"):
        check_model(build_user_model(f"{source}:build", weights, {"num_classes": 4, "head": "dict"}), x)
    code, _, err = cli_eval(capsys, user_model, image_folder, tmp_path, "--quiet", "--model-kwargs",
                            '{"num_classes": 4, "head": "dict"}')
    assert code == 2 and "--output KEY" in err
    code, _, err = cli_eval(capsys, user_model, image_folder, tmp_path, "--quiet", "--model-kwargs",
                            '{"num_classes": 4, "head": "dict"}', "--output", "logits")
    assert code == 0, err
    picked = build_user_model(f"{source}:build", weights, {"num_classes": 4, "head": "tuple"}, output=0)
    plain = build_user_model(f"{source}:build", weights, {"num_classes": 4})
    assert torch.equal(picked(x), plain(x))


def test_a_model_in_train_mode_is_warned_evaluated_in_eval_mode_and_restored(user_model, image_folder, tmp_path):
    source, weights = user_model
    model = build_user_model(f"{source}:build", weights, {"num_classes": 4})
    expected = ibrar.evaluate_model(model, dataset="imagefolder", data_root=image_folder, attacks=["fgsm"], n=8,
                                    out_dir=tmp_path / "eval", device="cpu", quiet=True, large_eps_check=False)
    model.train()
    with pytest.warns(UserWarning, match="train mode"):
        found = ibrar.evaluate_model(model, dataset="imagefolder", data_root=image_folder, attacks=["fgsm"], n=8,
                                     out_dir=tmp_path / "train", device="cpu", quiet=True, large_eps_check=False)
    assert model.training and found["clean"] == expected["clean"]
    assert found["attacks"][0]["accuracy"] == expected["attacks"][0]["accuracy"]


def test_normalize_puts_the_constants_in_front_as_robustbench_does(user_model):
    source, weights = user_model
    mean, std = parse_normalize("0.5,0.4,0.3/0.2,0.25,0.3")
    wrapped = build_user_model(f"{source}:build", weights, {"num_classes": 4}, normalize=(mean, std))
    plain = build_user_model(f"{source}:build", weights, {"num_classes": 4})
    x = torch.rand(2, 3, 32, 32)
    scaled = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert isinstance(wrapped, Normalized) and torch.allclose(wrapped(x), plain(scaled))
    with pytest.raises(ModelSpecError, match="MEAN/STD"):
        parse_normalize("0.5,0.4,0.3")


def test_a_model_that_cannot_take_the_images_is_a_model_spec_error(user_model):
    source, weights = user_model
    x = torch.rand(2, 3, 32, 32)
    two = build_user_model(f"{source}:build", weights, {"num_classes": 4}, normalize=([0.5, 0.5], [0.2, 0.2]))
    with pytest.raises(ModelSpecError, match="2 means and stds, the images have 3 channels"):
        check_model(two, x, 4)
    flat = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 4))  # built for 16 x 16 images
    with pytest.raises(ModelSpecError, match=r"fails on a batch of the test images shaped \(2, 3, 32, 32\)"):
        check_model(flat, x, 4)


def test_cli_model_usage_errors_name_the_fix(capsys, tmp_path):
    code = main(["eval", "--model", "no_such_module_xyz:build", "--out", str(tmp_path)])
    assert code == 2 and "cannot import" in capsys.readouterr().err
    code = main(["eval", "--model", "torch.nn:Linear", "run_folder"])
    assert code == 2 and "exactly one" in capsys.readouterr().err
    code = main(["eval", "run_folder", "--weights", "w.safetensors"])
    assert code == 2 and "go with --model" in capsys.readouterr().err


def test_model_kwargs_the_builder_does_not_take_are_a_model_spec_error(user_model, capsys, tmp_path):
    source, weights = user_model
    code = main(["eval", "--model", f"{source}:build", "--weights", str(weights), "--model-kwargs",
                 '{"num_clases": 4}', "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "unexpected keyword argument 'num_clases'" in err and "--model-kwargs" in err
    assert "Traceback" not in err


def test_cli_model_writes_a_robustbench_card(user_model, image_folder, tmp_path, capsys, monkeypatch):
    from ibrar.attacks import ReferenceAutoAttack, registry

    monkeypatch.setitem(registry._FAMILIES, "autoattack",  # a reduced budget keeps the test fast
                        (None, lambda m, eps, s, **p: ReferenceAutoAttack(m, eps=eps, **p, n_iter=2, n_queries=5)))
    source, weights = user_model
    code = main(["eval", "--model", f"{source}:build", "--weights", str(weights), "--model-kwargs",
                 '{"num_classes": 4}', "--dataset", "imagefolder", "--data-root", str(image_folder), "--attacks",
                 "autoattack", "--n", "8", "--device", "cpu", "--quiet", "--no-large-eps-check", "--out",
                 str(tmp_path / "eval"), "--robustbench-card", "Mine", "--card-dir", str(tmp_path)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    card = json.loads((tmp_path / "model_info" / "imagefolder" / "Linf" / "Mine.json").read_text())
    result = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert card["architecture"] == f"{source}:build" and card["clean_acc"] == f"{100 * result['clean']:.2f}"
    assert "autoattack APGD-CE: " in captured.err  # AutoAttack's stages each get their line


# ---- training a user's own model: `model.name: path/to/file.py:builder` -------------------------------------


def test_train_takes_a_users_model_file_with_ib_terms_and_mask_and_evaluates_it(user_model, image_folder, tmp_path,
                                                                                 capsys):
    """As `ibrar eval --model` finds a builder, so does `ibrar train`: a file path or an importable module,
    called with num_classes; the IB layers and the masked layer come from the config."""
    import yaml

    source, _ = user_model
    config = tmp_path / "mine.yaml"
    config.write_text(yaml.safe_dump({
        "device": "cpu", "seed": 0,
        "model": {"name": f"{source}:build", "ib_layers": ["features.2", "fc"], "last_conv": "features.0"},
        "data": {"name": "imagefolder", "root": str(image_folder), "batch_size": 16},
        "method": {"name": "ce"}, "ib": {"enabled": True, "layers": "all"},
        "mask": {"enabled": True, "drop_fraction": 0.25},
        "optim": {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.0},
        "train": {"epochs": 1, "eval_subset": 16, "eval_pgd_steps": 2},
        "eval": {"attacks": ["fgsm"], "n": N},
    }))
    run = tmp_path / "run"
    assert main(["train", str(config), "--out", str(run), "--quiet"]) == 0, capsys.readouterr().err
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("hsic_x/fc" in m for m in metrics)  # the IB terms ran on the user's layers
    mask = torch.load(run / "final.pt", map_location="cpu", weights_only=True)["mask"]["mask"]
    assert mask.numel() == 8 and 0 < int(mask.sum()) < 8  # features.0's channels, the final fit's drops
    assert json.loads((run / "eval.json").read_text())["attacks"][0]["name"] == "fgsm"
    capsys.readouterr()
    assert main(["eval", str(run), "--attacks", "pgd2", "--n", str(N), "--quiet", "--no-large-eps-check"]) == 0
    assert json.loads((run / "eval.json").read_text())["attacks"][0]["name"] == "pgd2"  # reloaded from the file


def test_train_names_model_name_when_the_users_builder_cannot_be_found_or_built(tmp_path, image_folder, capsys):
    for name, expected in ((f"{tmp_path / 'absent.py'}:build", "is not a file"),
                           ("no_such_module_here:build", "cannot import 'no_such_module_here'"),
                           ("os.path:join", "raised TypeError"),  # a builder that takes no num_classes=
                           ("builtins:dict", "returned dict, not a torch.nn.Module")):
        code = main(["train", "--out", str(tmp_path / "run"), "--quiet", "--data-root", str(image_folder),
                     "cpu/ce-fast.yaml", f"model.name={name}", "device=cpu"])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") <= 2 and "model.name:" in err and expected in err, err
