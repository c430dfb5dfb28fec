"""Layer taps and the IB regularizer."""

import pytest
import torch
from torch import nn
from torchvision.models import resnet18

import ibrar
from ibrar.regularizer import IBRegularizer, one_hot_labels
from ibrar.taps import unwrap


class Nested(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 5), nn.Tanh()))
        self.head = nn.Linear(5, 3)

    def forward(self, x):
        return self.head(self.encoder(x))


def test_taps_capture_nested_modules_with_their_graph():
    model = Nested()
    x = torch.randn(4, 6)
    with ibrar.tap_layers(model, ["encoder.0", "encoder.2", "encoder.2.1"]) as feats:
        out = model(x)
    assert set(feats) == {"encoder.0", "encoder.2", "encoder.2.1"}
    assert feats["encoder.0"].shape == (4, 8)
    assert torch.equal(feats["encoder.2"], feats["encoder.2.1"])
    assert torch.allclose(model.head(feats["encoder.2"]), out)
    assert feats["encoder.0"].requires_grad


def test_taps_on_a_torchvision_model_and_hooks_are_removed():
    model = resnet18(num_classes=4).eval()
    with ibrar.tap_layers(model, ["layer2", "layer4.1.conv2", "avgpool"]) as feats:
        model(torch.rand(2, 3, 32, 32))
    assert feats["layer2"].shape == (2, 128, 4, 4)
    assert feats["avgpool"].shape == (2, 512, 1, 1)
    assert all(not m._forward_hooks for m in model.modules())


def test_taps_remove_hooks_after_an_exception():
    model = Nested()
    with pytest.raises(RuntimeError):
        with ibrar.tap_layers(model, ["encoder.0"]):
            raise RuntimeError("boom")
    assert all(not m._forward_hooks for m in model.modules())


def test_taps_see_through_a_wrapper_with_module_attribute():
    inner = Nested()
    wrapper = nn.DataParallel(inner)  # same `.module` convention as DistributedDataParallel
    with ibrar.tap_layers(wrapper, ["encoder.0"]) as feats:
        wrapper(torch.randn(3, 6))
    assert feats["encoder.0"].shape == (3, 8)


def test_taps_see_through_torch_compile_and_ddp_style_wrappers():
    inner = Nested()
    compiled = torch.compile(nn.DataParallel(inner), backend="eager")
    assert unwrap(compiled) is inner
    with ibrar.tap_layers(compiled, ["encoder.2.0"]) as feats:
        compiled(torch.randn(3, 6))
    assert feats["encoder.2.0"].shape == (3, 5)


def test_unknown_layer_name_lists_valid_names():
    with pytest.raises(ValueError, match=r"not found.*valid names: encoder, encoder\.0"):
        with ibrar.tap_layers(Nested(), ["encoder.9"]):
            pass


def _features(m=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(m, 3, 4, 4, generator=g, dtype=torch.float64)
    y = torch.arange(m) % 3
    feats = {"a": torch.randn(m, 5, generator=g, dtype=torch.float64),
             "b": torch.randn(m, 2, 2, generator=g, dtype=torch.float64)}
    return x, y, feats


def test_regularizer_equals_weighted_sum_of_hsic_terms():
    x, y, feats = _features()
    reg = IBRegularizer(["a", "b"], num_classes=3, alpha=0.3, beta=0.7)
    terms = reg(x, y, feats)
    onehot = one_hot_labels(y, 3).double()
    want = 0.0
    for name in ("a", "b"):
        hx = ibrar.hsic(x, feats[name])
        hy = ibrar.hsic(onehot, feats[name], kernel_x="linear")
        assert terms.hsic_x[name].item() == pytest.approx(hx.item(), rel=1e-9)
        assert terms.hsic_y[name].item() == pytest.approx(hy.item(), rel=1e-9)
        want += 0.3 * hx - 0.7 * hy
    assert terms.loss.item() == pytest.approx(want.item(), rel=1e-9)


@pytest.mark.parametrize("estimator,label_kernel", [("nocco", "linear"), ("hsic", "gaussian"), ("nhsic", "linear")])
def test_one_batched_estimate_for_every_kernel_equals_the_kernel_by_kernel_one_bit_for_bit(estimator, label_kernel):
    """The regularizer prepares X's, Y's and every layer's kernel in one batched call (one float64 solve for all:
    fewer launches on a GPU); on the CPU, at the paper's batch of 100, that is bit for bit what preparing and
    combining each kernel alone computes, the loss, each term and the features' gradients alike."""
    from ibrar.hsic import combine, kernel_matrix, prepare

    g = torch.Generator().manual_seed(1)
    m = 100
    x, y = torch.rand(m, 3, 8, 8, generator=g), torch.randint(0, 10, (m,), generator=g)
    shapes = {"block5": (m, 32, 2, 2), "fc1": (m, 64), "fc2": (m, 48)}
    feats = {name: torch.randn(*shape, generator=g).requires_grad_() for name, shape in shapes.items()}
    reg = IBRegularizer(list(shapes), num_classes=10, estimator=estimator, label_kernel=label_kernel)

    terms = reg(x, y, feats)
    batched = torch.autograd.grad(terms.loss, list(feats.values()))
    px = prepare(kernel_matrix(x, "gaussian").matrix, estimator)
    py = prepare(kernel_matrix(one_hot_labels(y, 10), label_kernel).matrix, estimator)
    loss = x.new_zeros(())
    for name, t in feats.items():  # one kernel at a time, in the layers' order
        pt = prepare(kernel_matrix(t, "gaussian").matrix, estimator)
        h_x, h_y = combine(px, pt, estimator).float(), combine(py, pt, estimator).float()
        assert torch.equal(terms.hsic_x[name], h_x.detach()) and torch.equal(terms.hsic_y[name], h_y.detach())
        loss = loss + reg.alpha * h_x - reg.beta * h_y
    assert torch.equal(terms.loss, loss)
    one_by_one = torch.autograd.grad(loss, list(feats.values()))
    assert all(torch.equal(a, b) for a, b in zip(batched, one_by_one, strict=True))


def test_under_bf16_autocast_the_penalty_is_float32_and_exact_for_the_bf16_features():
    """train.amp runs the forward in bf16; the HSIC terms must still be computed in float32 (not bf16)."""
    x, y, _ = _features()
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 16), nn.ReLU(), nn.Linear(16, 3))
    reg = IBRegularizer(["1"], num_classes=3, alpha=0.3, beta=0.7)
    with ibrar.tap_layers(model, ["1"]) as feats, torch.autocast("cpu", dtype=torch.bfloat16):
        model(x.float())
        terms = reg(x.float(), y, feats)
    assert feats["1"].dtype == torch.bfloat16
    assert terms.loss.dtype == torch.float32
    reference = reg(x, y, {"1": feats["1"].double()})  # the same bf16 values, in float64
    assert terms.loss.item() == pytest.approx(reference.loss.item(), rel=1e-4)


def test_regularizer_gradient_reaches_the_features_and_the_label_term_pulls_the_right_way():
    x, y, feats = _features()
    feats = {k: v.clone().requires_grad_(True) for k, v in feats.items()}
    reg = IBRegularizer(["a"], num_classes=3, alpha=0.0, beta=1.0, estimator="nhsic")
    before = reg(x, y, feats)
    (grad,) = torch.autograd.grad(before.loss, feats["a"])
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    stepped = {"a": feats["a"] - 0.5 * grad}
    # Descending the penalty raises HSIC(Y, T): more label information.
    assert reg(x, y, stepped).hsic_y["a"] > before.hsic_y["a"]


def test_gaussian_label_kernel_and_hbar_preset():
    x, y, feats = _features()
    reg = IBRegularizer.hbar(["a", "b"], num_classes=3)
    assert reg.label_kernel == "gaussian" and reg.alpha < reg.beta
    terms = reg(x, y, feats)
    assert torch.isfinite(terms.loss)


def test_x_source_selects_adversarial_when_asked():
    clean, adv = torch.zeros(2, 1), torch.ones(2, 1)
    assert IBRegularizer(["a"], 3).select_x(clean, adv) is clean
    assert IBRegularizer(["a"], 3, x_source="adversarial").select_x(clean, adv) is adv


@pytest.mark.parametrize(
    "kwargs, match",
    [({"layers": []}, "layers"), ({"alpha": -1.0}, "alpha"), ({"estimator": "mi"}, "estimator"),
     ({"label_kernel": "poly"}, "label_kernel"), ({"num_classes": 1}, "num_classes"),
     ({"x_source": "noisy"}, "x_source")],
)
def test_regularizer_rejects_bad_options(kwargs, match):
    params = {"layers": ["a"], "num_classes": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        IBRegularizer(**params)


def test_regularizer_rejects_labels_out_of_range_and_missing_layers():
    x, y, feats = _features()
    reg = IBRegularizer(["a"], num_classes=3)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\]"):
        reg(x, y + 1, feats)
    with pytest.raises(ValueError, match="no output captured"):
        IBRegularizer(["zzz"], num_classes=3)(x, y, feats)
    with pytest.raises(ValueError, match="same batch size"):
        reg(x[:5], y, feats)


def test_channels_last_features_give_the_same_penalty_and_mask_scores():
    """train.channels_last changes the memory layout of every conv output; HSIC must not notice."""
    from ibrar.mask import ChannelMask

    g = torch.Generator().manual_seed(0)
    x = torch.rand(10, 3, 6, 6, generator=g)
    y = torch.arange(10) % 4
    t = torch.randn(10, 8, 5, 5, generator=g)
    t_last = t.to(memory_format=torch.channels_last)
    assert not t_last.is_contiguous() and torch.equal(t, t_last)
    reg = IBRegularizer(["t"], num_classes=4)
    assert torch.allclose(reg(x, y, {"t": t}).loss, reg(x.to(memory_format=torch.channels_last), y,
                                                          {"t": t_last}).loss, rtol=1e-6)
    mask = ChannelMask(8, num_classes=4)
    assert torch.allclose(mask.channel_scores(t, y)[0], mask.channel_scores(t_last, y)[0], rtol=1e-5)


def test_the_float32_penalty_and_gradient_lie_within_tolerance_of_float64():
    """The CPU half of tests/test_cuda.py's float64-reference check, run everywhere: float32 within 1e-3 (values)
    and 2e-3 (gradients) of float64 by relative norm, the bounds each device is held to there."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(100, 3, 8, 8, generator=g), torch.randint(10, (100,), generator=g)
    feats = {"conv": torch.tanh(x.repeat(1, 6, 1, 1)[:, :16, :4, :4] + 0.03 * y[:, None, None, None]
                                + 0.1 * torch.randn(100, 16, 4, 4, generator=g)),
             "fc": torch.relu(x.flatten(1)[:, :32] - 0.5 + 0.05 * torch.randn(100, 32, generator=g))}
    reg = IBRegularizer(["conv", "fc"], num_classes=10)

    def run(dtype):
        leaves = {k: v.detach().to(dtype, copy=True).requires_grad_(True) for k, v in feats.items()}
        terms = reg(x.to(dtype), y, leaves)
        terms.loss.backward()
        return [terms.loss.detach(), *terms.hsic_x.values(), *terms.hsic_y.values()], [leaves["conv"].grad,
                                                                                        leaves["fc"].grad]

    def error(a, ref):
        return ((a.double() - ref).norm() / ref.norm()).item()

    (values, grads), (ref_values, ref_grads) = run(torch.float32), run(torch.float64)
    assert max(error(a, r) for a, r in zip(values, ref_values, strict=True)) < 1e-3
    assert max(error(a, r) for a, r in zip(grads, ref_grads, strict=True)) < 2e-3
    assert max(error(a, r) for a, r in zip(grads, ref_grads, strict=True)) > 1e-6  # float32 really ran
