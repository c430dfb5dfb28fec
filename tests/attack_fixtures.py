"""A tiny undefended classifier on generated images, shared by the attack and evaluation tests.

Ten classes of 3x8x8 images in [0, 1]: a class prototype plus noise, close enough together that an
L-inf perturbation of 8/255 breaks most of them. The model has BatchNorm so that tests can check
that attacks leave its running statistics alone. Training takes about a second on a CPU.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor, nn

NUM_CLASSES = 10
SIDE = 8


class TinyCNN(nn.Module):
    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2)
        )
        self.fc1 = nn.Sequential(nn.Flatten(), nn.Linear(16 * (SIDE // 2) ** 2, 32), nn.ReLU())
        self.classifier = nn.Linear(32, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.fc1(self.conv(x)))


def make_data(n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``n`` images (float in [0, 1]) and labels from fixed class prototypes."""
    fixed = torch.Generator().manual_seed(123)
    protos = 0.5 + 0.05 * torch.randn(NUM_CLASSES, 3, SIDE, SIDE, generator=fixed)
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(NUM_CLASSES, (n,), generator=g)
    x = protos[y] + 0.03 * torch.randn(n, 3, SIDE, SIDE, generator=g)
    return x.clamp(0.0, 1.0), y


@functools.lru_cache(maxsize=1)
def _trained() -> tuple[TinyCNN, Tensor, Tensor]:
    torch.manual_seed(0)
    model = TinyCNN()
    x, y = make_data(2048, seed=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for step in range(300):
        idx = torch.randint(len(x), (128,), generator=torch.Generator().manual_seed(step))
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.zero_grad(set_to_none=True)
    model.eval()
    x_test, y_test = make_data(256, seed=2)
    return model, x_test, y_test


def trained_model() -> TinyCNN:
    """The trained model (shared; tests that change its mode must restore it)."""
    return _trained()[0]


def test_data(n: int = 64) -> tuple[Tensor, Tensor]:
    """The first ``n`` held-out examples."""
    _, x, y = _trained()
    return x[:n].clone(), y[:n].clone()


test_data.__test__ = False  # not a pytest test
