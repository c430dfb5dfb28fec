"""A rough estimate of how long an evaluation will take, printed before `ibrar eval` starts.

Model: the measured time of one forward+backward pass per example, times each attack's number of
gradient computations per attacked example (a forward alone counts a third), times the examples it
attacks (the clean-correct ones). AutoAttack is counted as if every stage ran on every clean-correct
example, so the real run is usually shorter. It is an estimate, and says so.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ibrar.attacks import Attack, ReferenceAutoAttack

FORWARD_SHARE = 1 / 3  # a forward pass costs about a third of a forward+backward


def gradient_count(attack: Attack | ReferenceAutoAttack, num_classes: int) -> float:
    """Forward+backward passes the attack spends on one attacked example (its full budget)."""
    p = attack.params()
    kind = type(attack).__name__
    steps = p.get("steps", 1)
    if isinstance(attack, ReferenceAutoAttack):
        targets = p["n_target_classes"] if p["n_target_classes"] is not None else min(9, num_classes - 1)
        n_iter, n_queries = p["budget"]["n_iter"], p["budget"]["n_queries"]
        return n_iter + 2 * targets * n_iter + FORWARD_SHARE * n_queries  # APGD-CE, APGD-T, FAB-T, Square
    if kind == "FGSM":
        return 1.0
    if kind == "Square":
        return FORWARD_SHARE * p["n_queries"]
    if kind == "FAB":  # untargeted FAB takes the gradient of every class's logit at each step
        per_step = 1 if p.get("targeted") else num_classes
        targets = min(p.get("n_target_classes", 1), num_classes - 1) if p.get("targeted") else 1
        return float(steps * per_step * targets * p.get("n_restarts", 1))
    if kind == "APGDT":
        return float(steps * min(p["n_target_classes"], num_classes - 1) * p.get("n_restarts", 1))
    return float(steps * p.get("restarts", p.get("n_restarts", 1)) * p.get("m", 1))


def seconds_per_example(model: nn.Module, x: Tensor, y: Tensor) -> tuple[float, float]:
    """(seconds of one forward+backward per example, clean accuracy) measured on the batch ``x``."""
    def step() -> Tensor:
        xg = x.detach().requires_grad_(True)
        logits = model(xg)
        torch.autograd.grad(F.cross_entropy(logits, y), xg)
        return logits

    with torch.enable_grad():
        step()  # warm-up (allocations, cuDNN's choice of kernels)
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)
        start = time.perf_counter()
        logits = step()
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)
    return (time.perf_counter() - start) / len(x), (logits.argmax(1) == y).float().mean().item()


def estimate_seconds(model: nn.Module, x: Tensor, y: Tensor, n: int,
                     attacks: Mapping[str, Attack | ReferenceAutoAttack]) -> tuple[float, str]:
    """Estimated seconds for ``attacks`` on ``n`` examples like ``x`` (a batch of them), and how it was made."""
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        per_example, clean = seconds_per_example(model, x, y)
        num_classes = int(model(x[:1]).shape[1])
    finally:
        for module, training in modes.items():
            module.training = training
    grads = sum(gradient_count(a, num_classes) for a in attacks.values())
    seconds = per_example * n * (FORWARD_SHARE + clean * grads)
    how = (f"{per_example * 1e3:.2f} ms per forward+backward per example x {grads:.0f} gradient computations per "
           f"attacked example x {clean:.0%} of {n} examples classified correctly; AutoAttack counted as if every "
           "stage ran on all of them")
    return seconds, how


def format_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
