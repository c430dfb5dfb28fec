"""The channel mask: the right channels dropped, both rules, state_dict, and the disabled no-op."""

import pytest
import torch
from torch import nn

from ibrar.mask import ChannelMask

C = 20


def informative_features(m=40, seed=0):
    """Channels 0..C-1 where channel c's link to the label grows with c; channel 0 and 1 are pure noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(m) % 4
    noise = torch.randn(m, C, 2, 2, generator=g)
    signal = y.float().view(m, 1, 1, 1).expand(m, C, 2, 2)
    weight = torch.linspace(0, 1, C).view(1, C, 1, 1)
    return weight * signal * 3 + (1 - weight) * noise, y


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Identity()
        self.head = nn.Linear(C * 4, 4)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


def test_channel_scores_rank_label_information():
    f, y = informative_features()
    mask = ChannelMask(C, num_classes=4, estimator="nhsic")
    score_y, score_x = mask.channel_scores(f, y)
    assert score_x is None and score_y.shape == (C,)
    assert score_y[:3].max() < score_y[-3:].min()


def test_batched_scores_equal_one_call_per_channel():
    import ibrar

    f, y = informative_features(m=16)
    mask = ChannelMask(C, num_classes=4)
    score_y, _ = mask.channel_scores(f, y)
    onehot = torch.nn.functional.one_hot(y, 4).float()
    for c in (0, 7, C - 1):
        assert score_y[c].item() == pytest.approx(ibrar.hsic(f[:, c], onehot, kernel_y="linear").item(), rel=1e-4)


def test_paper_rule_drops_exactly_the_lowest_fraction():
    mask = ChannelMask(C, num_classes=4, drop_fraction=0.15)
    scores = torch.tensor([5.0, 0.1, 3.0, 0.2, 9.0, 0.05] + [10.0] * (C - 6))
    keep = mask.select(scores)
    assert torch.nonzero(keep == 0).flatten().tolist() == [1, 3, 5]  # int(0.15 * 20) = 3 lowest


@pytest.mark.parametrize(("fraction", "channels", "dropped"), [(0.29, 100, 29), (0.57, 200, 114), (0.05, 512, 25),
                                                              (0.5, 3, 1), (0.0, 64, 0)])
def test_the_paper_rule_drops_the_decimal_fraction_rounded_down(fraction, channels, dropped):
    mask = ChannelMask(channels, num_classes=4, drop_fraction=fraction)
    assert int((mask.select(torch.randn(channels)) == 0).sum()) == dropped == mask.paper_count


def test_official_rule_drops_lowest_label_and_highest_input_scores():
    mask = ChannelMask(C, num_classes=4, rule="official", official_count=2)
    score_y = torch.arange(C, dtype=torch.float)  # 0 and 1 lowest
    score_x = torch.zeros(C)
    score_x[[7, 11]] = 1.0  # highest
    keep = mask.select(score_y, score_x)
    assert sorted(torch.nonzero(keep == 0).flatten().tolist()) == [0, 1, 7, 11]
    assert not mask.at_eval


def test_training_refresh_and_application_at_eval():
    f, y = informative_features()
    net = Net()
    mask = ChannelMask(C, num_classes=4, drop_fraction=0.1, refresh_every=3, estimator="nhsic")
    mask.attach(net, "features")
    net.train()
    mask.observe(f, y)  # step 0: refresh
    net(f)
    assert mask.dropped == [0, 1] or set(mask.dropped) <= {0, 1, 2}
    assert len(mask.dropped) == 2
    dropped = mask.dropped
    # applied at evaluation: the dropped channels contribute nothing
    net.eval()
    g = torch.Generator().manual_seed(9)
    x = torch.randn(3, C, 2, 2, generator=g)
    x2 = x.clone()
    x2[:, dropped] = 100.0
    assert torch.allclose(net(x), net(x2))
    mask.at_eval = False
    assert not torch.allclose(net(x), net(x2))


def test_official_mask_covers_every_training_forward_of_a_refresh_batch_and_no_other():
    """The authors' TRADES/MART scripts set the mask's targets before both the clean and the adversarial
    forward of a refresh batch: each is masked, from its own features; the next batch's are not."""
    f, y = informative_features()
    net = Net()
    mask = ChannelMask(C, num_classes=4, rule="official", official_count=2, refresh_every=2)
    mask.attach(net, "features")
    seen = []
    net.head.register_forward_hook(lambda m, i, o: seen.append(i[0].view(-1, C, 4).abs().sum(dim=(0, 2))))
    net.train()
    mask.observe(f, y)
    net(f)
    assert int((seen[-1] == 0).sum()) == 4
    shuffled = f[torch.randperm(len(f), generator=torch.Generator().manual_seed(0))]  # labels no longer fit
    net(shuffled)  # the same batch's second (adversarial) forward: masked too, scored on its own features
    own = mask.select(*mask.channel_scores(shuffled, y, f))
    assert torch.equal(seen[-1] == 0, own == 0) and not torch.equal(own, mask.select(*mask.channel_scores(f, y, f)))
    mask.observe(f, y)  # the next batch is not a refresh batch: unmasked
    net(f)
    assert int((seen[-1] == 0).sum()) == 0
    net.eval()
    net(f)
    assert int((seen[-1] == 0).sum()) == 0
    assert torch.equal(mask.mask, torch.ones(C))  # never saved


@pytest.mark.parametrize(("rule", "epoch_batches", "due"), [
    ("official", 25, [10, 20, 35, 45, 60, 70]),  # the authors': batch_idx % 10 == 0 and batch_idx != 0, per epoch
    ("official", None, list(range(0, 75, 10))),  # no epoch length known: every 10th batch
    ("paper", 25, list(range(0, 75, 10))),  # the paper rule counts on across epochs
])
def test_which_batches_rescore_by_rule_and_epoch_length(rule, epoch_batches, due):
    f, y = informative_features()
    mask = ChannelMask(C, num_classes=4, rule=rule, official_count=2, refresh_every=10)
    mask.epoch_batches = epoch_batches
    seen = []
    for batch in range(75):
        if mask.refresh_due:
            seen.append(batch)
        mask.observe(f, y)
        assert (mask._pending is not None) == (seen[-1:] == [batch])
    assert seen == due


def test_state_dict_round_trip_and_refresh_counter():
    mask = ChannelMask(C, num_classes=4)
    mask.mask[[2, 5]] = 0.0
    mask.step += 7
    other = ChannelMask(C, num_classes=4)
    other.load_state_dict(mask.state_dict())
    assert other.dropped == [2, 5] and int(other.step) == 7


def test_disabled_mask_is_a_no_op():
    f, y = informative_features()
    net = Net()
    ref = net(f)
    mask = ChannelMask(C, num_classes=4, enabled=False, drop_fraction=0.5)
    mask.mask.zero_()
    mask.attach(net, "features")
    net.train()
    mask.observe(f, y)
    assert torch.equal(net(f), ref)
    net.eval()
    assert torch.equal(net(f), ref)


def test_final_fit_on_training_batches_sees_unmasked_features():
    f, y = informative_features(m=80)
    net = Net()
    mask = ChannelMask(C, num_classes=4, drop_fraction=0.1, estimator="nhsic")
    mask.attach(net, "features")
    mask.mask.zero_()  # even a mask that drops everything must not blind the fit
    scores = mask.fit(net, [(f[:40], y[:40]), (f[40:], y[40:])])
    assert scores.shape == (C,)
    assert set(mask.dropped) <= {0, 1, 2, 3} and len(mask.dropped) == 2
    with pytest.raises(ValueError, match="at least one batch"):
        mask.fit(net, [])


@pytest.mark.parametrize(
    "kwargs, match",
    [({"drop_fraction": 1.0}, "drop_fraction"), ({"rule": "random"}, "rule"), ({"refresh_every": 0}, "refresh_every"),
     ({"num_channels": 0}, "num_channels"), ({"rule": "official", "official_count": 10}, "official_count")],
)
def test_bad_options_are_rejected(kwargs, match):
    params = {"num_channels": C, "num_classes": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        ChannelMask(**params)


def test_wrong_feature_shape_is_rejected():
    with pytest.raises(ValueError, match="features"):
        ChannelMask(C, num_classes=4).channel_scores(torch.randn(5, C + 1), torch.zeros(5, dtype=torch.long))


def test_the_mask_moves_like_any_module_and_keeps_working():
    # .to() goes through nn.Module._apply, which a helper of the same name once shadowed (the mask then could
    # not follow the model to a GPU)
    mask = ChannelMask(8, num_classes=4, drop_fraction=0.25)
    mask.mask[:2] = 0.0
    assert mask.to(torch.float64) is mask and mask.mask.dtype == torch.float64 and mask.step.dtype == torch.long
    model = nn.Sequential(nn.Conv2d(3, 8, 1)).eval()
    mask.attach(model, "0")
    out = model(torch.ones(2, 3, 4, 4))
    assert out.dtype == torch.float32 and (out[:, :2] == 0).all() and (out[:, 2:] != 0).any()


# ---- under bf16 autocast ---------------------------------------------------------------------------------


def many_channel_features(m=100, channels=64, seed=0):
    """Many channels with close label scores, so that a few percent of error in the scores reorders them."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(10, (m,), generator=g)
    link = 0.5 * torch.rand(channels, generator=g)[None, :, None, None] * y[:, None, None, None].float() / 10
    x = torch.rand(m, 3, 8, 8, generator=g)
    return torch.randn(m, channels, 4, 4, generator=g) + link, y, x


@pytest.mark.parametrize("rule", ["paper", "official"])
def test_under_cpu_bf16_autocast_the_mask_scores_and_drops_as_in_float32(rule):
    f, y, x = many_channel_features()
    mask = ChannelMask(64, num_classes=10, rule=rule, drop_fraction=0.25, official_count=8)
    with_x = x if rule == "official" else None
    fp32_y, fp32_x = mask.channel_scores(f, y, with_x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        amp_y, amp_x = mask.channel_scores(f, y, with_x)
    # bf16 kernels moved these scores by up to 6% and dropped 4 other channels; in float32 they are the same
    assert amp_y.dtype == torch.float32 and torch.equal(amp_y, fp32_y)
    if rule == "official":
        assert torch.equal(amp_x, fp32_x)
    assert torch.equal(mask.select(amp_y, amp_x), mask.select(fp32_y, fp32_x))


def test_the_training_hook_scores_a_bf16_forward_in_float32():
    """In the step the hook sees the layer's bf16 output: its mask is float32 scoring of exactly that output."""
    f, y, _ = many_channel_features()
    conv = nn.Conv2d(64, 64, 1)
    net = nn.Sequential(conv, nn.Flatten(), nn.Linear(64 * 16, 10)).train()
    mask = ChannelMask(64, num_classes=10, drop_fraction=0.25)
    mask.attach(net, "0")
    seen = []
    conv.register_forward_hook(lambda _m, _i, out: seen.append(out.detach()), prepend=True)  # before the mask
    scored = []
    select = mask.select
    mask.select = lambda score_y, score_x=None: scored.append(score_y) or select(score_y, score_x)
    mask.observe(f, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        net(f)
    (features,), (scores,) = seen, scored
    assert features.dtype == torch.bfloat16
    expected, _ = ChannelMask(64, num_classes=10, drop_fraction=0.25).channel_scores(features.float(), y)
    assert torch.equal(scores, expected) and torch.equal(mask.mask, select(expected))
