"""HSIC estimators on a minibatch: the information measure the IB-RAR penalty is built from.

Pure functions on tensors. Everything is differentiable, stays on the inputs' device and dtype (under any
autocast too), and never produces NaN on finite input (constant or duplicated examples included).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

Estimator = Literal["hsic", "nhsic", "nocco"]
KernelKind = Literal["gaussian", "linear"]
Bandwidth = Literal["scaled", "median"]

ESTIMATORS: tuple[str, ...] = ("hsic", "nhsic", "nocco")
KERNELS: tuple[str, ...] = ("gaussian", "linear")
BANDWIDTHS: tuple[str, ...] = ("scaled", "median")

NOCCO_EPSILON = 1e-5


@dataclass(frozen=True)
class KernelMatrix:
    """An (m, m) kernel matrix computed once and passed where a tensor is accepted.

    The X kernel is the same for every layer in a training step; wrapping it makes that reuse explicit
    and keeps a square feature matrix from being mistaken for a kernel.
    """

    matrix: Tensor

    def __post_init__(self) -> None:
        if self.matrix.dim() != 2 or self.matrix.shape[0] != self.matrix.shape[1]:
            raise ValueError(f"KernelMatrix: expected a square (m, m) matrix, got shape {tuple(self.matrix.shape)}")

    @property
    def size(self) -> int:
        return self.matrix.shape[0]


def flatten_batch(x: Tensor, name: str = "x") -> Tensor:
    """(m, ...) -> (m, d): one row per example, as the estimators expect."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}; convert with .float()")
    if x.dim() == 0:
        raise ValueError(f"{name}: expected a batch with a leading example dimension, got a 0-dim tensor")
    if x.shape[0] < 2:
        raise ValueError(f"{name}: HSIC needs a batch of at least 2 examples, got {x.shape[0]}")
    return x.reshape(x.shape[0], -1)


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """a @ b in the inputs' dtype even under autocast: a bf16 product moves an HSIC estimate by several percent
    (and the mask's choice of channels with it), so every product of an estimator leaves autocast."""
    if torch.is_autocast_enabled(a.device.type):
        with torch.autocast(a.device.type, enabled=False):
            return a @ b
    return a @ b


def squared_distances(x: Tensor) -> Tensor:
    """Pairwise squared Euclidean distances of the rows of x (..., m, d), clamped at 0 against round-off.

    Distances do not change under translation; centring the rows first keeps the expansion
    ||a||^2 + ||b||^2 - 2 a.b from cancelling catastrophically in float32. Half-precision rows are measured in
    float32: their squares overflow fp16 (features of about 10 over 512 channels) and inf - inf is NaN.
    """
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    x = x - x.mean(dim=-2, keepdim=True)
    sq = (x * x).sum(-1)
    d = sq.unsqueeze(-1) + sq.unsqueeze(-2) - 2.0 * matmul(x, x.transpose(-1, -2))
    return d.clamp_min(0.0)


def gaussian_kernel(x: Tensor, sigma: float = 5.0, bandwidth: Bandwidth = "scaled") -> Tensor:
    """k(a, b) = exp(-||a - b||^2 / (2 s^2)), batched over leading dimensions of x (..., m, d).

    "scaled": s^2 = sigma^2 * d, the bandwidth the authors and HBaR use (it grows with the dimension).
    "median": s^2 = median of the non-zero pairwise squared distances (detached), the usual heuristic.
    """
    d2 = squared_distances(x)
    if bandwidth == "scaled":
        if sigma <= 0:
            raise ValueError(f"sigma: expected a positive bandwidth, got {sigma}")
        scale = 2.0 * sigma * sigma * x.shape[-1]
        return torch.exp(d2 / -scale)  # = exp(-d2 / scale) exactly (a sign is exact), one op fewer
    if bandwidth == "median":
        with torch.no_grad():
            m = x.shape[-2]
            off_diag = ~torch.eye(m, dtype=torch.bool, device=x.device)
            pairs = d2[..., off_diag]
            # A zero median (all examples identical) would divide by zero; any positive scale gives K = 1 then.
            med = torch.where(pairs > 0, pairs, torch.nan).nanmedian(dim=-1).values
            med = torch.nan_to_num(med, nan=1.0).clamp_min(torch.finfo(x.dtype).tiny)
        return torch.exp(-d2 / (2.0 * med[..., None, None]))
    raise ValueError(f"bandwidth: expected one of {BANDWIDTHS}, got {bandwidth!r}")


def linear_kernel(x: Tensor) -> Tensor:
    """k(a, b) = a . b, batched over leading dimensions of x (..., m, d)."""
    return matmul(x, x.transpose(-1, -2))


def one_hot_labels(y: Tensor, num_classes: int) -> Tensor:
    """Labels (m,) -> one-hot float (m, num_classes), with a clear error for labels out of range.

    `scatter_` rather than `F.one_hot`, which validates the labels on the host (a sync per step on a GPU);
    on the CPU `scatter_` itself refuses an index out of range, and that refusal becomes the error.
    """
    if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise ValueError(f"y: expected integer class labels, got dtype {y.dtype}")
    if y.dim() != 1:
        raise ValueError(f"y: expected a 1-D tensor of labels, got shape {tuple(y.shape)}")
    try:
        return torch.zeros(y.shape[0], num_classes, device=y.device).scatter_(1, y.long()[:, None], 1.0)
    except RuntimeError as err:
        if "out of bounds" not in str(err):
            raise
        raise ValueError(f"y: labels must lie in [0, {num_classes - 1}] (num_classes={num_classes}); "
                         f"{str(err).splitlines()[0]}") from None


def kernel_matrix(
    x: Tensor, kind: KernelKind = "gaussian", sigma: float = 5.0, bandwidth: Bandwidth = "scaled"
) -> KernelMatrix:
    """The kernel matrix of a batch (any shape, flattened per example), ready to be reused."""
    x = flatten_batch(x)
    if kind == "gaussian":
        return KernelMatrix(gaussian_kernel(x, sigma, bandwidth))
    if kind == "linear":
        return KernelMatrix(linear_kernel(x))
    raise ValueError(f"kernel: expected one of {KERNELS}, got {kind!r}")


def center(k: Tensor) -> Tensor:
    """K H with H = I - 11^T/m: subtract each row's mean (the one-sided centring of the authors' code)."""
    return k - k.mean(dim=-1, keepdim=True)


def double_center(k: Tensor) -> Tensor:
    """H K H: subtract row and column means."""
    return center(k) - center(k).mean(dim=-2, keepdim=True)


def solve(a: Tensor, b: Tensor) -> Tensor:
    """a^-1 b without the error check of `torch.linalg.solve`, which reads a flag on the host (a GPU sync).

    The matrices solved here always carry a positive ridge, so they are never singular.
    """
    return torch.linalg.solve_ex(a, b, check_errors=False)[0]


def nocco_operator(k: Tensor, epsilon: float = NOCCO_EPSILON) -> Tensor:
    """R = K H (K H + epsilon m I)^-1, batched; the one side of NOCCO that depends on one kernel only.

    R is a function of the single matrix K H, so it commutes with the inverse and equals
    (K H + epsilon m I)^-1 K H: one linear solve, no explicit inverse. The system's condition number reaches
    1e5 (the ridge is tiny), so it is solved in float64 whatever the input dtype (in float32 the estimate
    was off by about 0.5%); R is returned in float64.
    """
    k = k.double()
    m = k.shape[-1]
    kc = center(k)
    return solve(kc + epsilon * m * torch.eye(m, dtype=k.dtype, device=k.device), kc)


def prepare(k: Tensor, estimator: Estimator = "nocco") -> Tensor:
    """The part of an estimator that depends on one kernel matrix (..., m, m), computed once per kernel.

    Every estimator is then an inner product of two prepared kernels (`combine`), so a kernel shared by
    several terms (the inputs' and the labels' across all layers of a step) is prepared only once.
    """
    if estimator == "nocco":
        return nocco_operator(k)
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator: expected one of {ESTIMATORS}, got {estimator!r}")
    kc = double_center(k)
    if estimator == "hsic":
        return kc / (k.shape[-1] - 1)
    norm = torch.sqrt((kc * kc).sum(dim=(-2, -1), keepdim=True).clamp_min(torch.finfo(k.dtype).tiny))
    return kc / norm  # a constant kernel stays 0, so its nHSIC with anything is 0, never NaN


def combine(a: Tensor, b: Tensor, estimator: Estimator = "nocco") -> Tensor:
    """The estimate from two prepared kernels (broadcast over leading dimensions)."""
    if estimator == "nocco":
        return (a * b.transpose(-1, -2)).sum(dim=(-2, -1))  # tr(R_a R_b)
    value = (a * b).sum(dim=(-2, -1))
    return value.clamp(0.0, 1.0) if estimator == "nhsic" else value


def biased_hsic(k: Tensor, l: Tensor) -> Tensor:
    """tr(K H L H) / (m - 1)^2 (Gretton et al. 2005), batched over leading dimensions."""
    return combine(prepare(k, "hsic"), prepare(l, "hsic"), "hsic")


def normalized_hsic(k: Tensor, l: Tensor) -> Tensor:
    """HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)), in [0, 1]; 0 when either side is constant."""
    return combine(prepare(k, "nhsic"), prepare(l, "nhsic"), "nhsic")


def nocco(k: Tensor, l: Tensor, epsilon: float = NOCCO_EPSILON) -> Tensor:
    """tr(R_x R_y) with R = K H (K H + epsilon m I)^-1: the normalised cross-covariance of the authors' code."""
    return combine(nocco_operator(k, epsilon), nocco_operator(l, epsilon), "nocco").to(k.dtype)


def nocco_low_rank(k: Tensor, y: Tensor, epsilon: float = NOCCO_EPSILON) -> Tensor:
    """`nocco(K, Y Y^T)` for a linear kernel on features y (m, c), without forming the m x m label side.

    With L = Y Y^T, L H = Y V^T (V = H Y), so R_y = U V^T with U = (L H + epsilon m I)^-1 Y, and
    tr(R_x R_y) = sum(V * (R_x U)). Each (batched) solve then has c right-hand sides instead of m, which
    makes scoring every channel of a layer (C kernels K at once) several times cheaper.
    """
    out_dtype = k.dtype
    k, y = k.double(), y.double()
    m = k.shape[-1]
    ridge = epsilon * m * torch.eye(m, dtype=k.dtype, device=k.device)
    v = y - y.mean(dim=0, keepdim=True)
    u = solve(matmul(y, v.T) + ridge, y)
    kc = center(k)
    z = solve(kc + ridge, matmul(kc, u))
    return (z * v).sum(dim=(-2, -1)).to(out_dtype)


def estimate(k: Tensor, l: Tensor, estimator: Estimator = "nocco") -> Tensor:
    """Apply a named estimator to two (..., m, m) kernel matrices; the result has k's dtype."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator: expected one of {ESTIMATORS}, got {estimator!r}")
    return combine(prepare(k, estimator), prepare(l, estimator), estimator).to(k.dtype)


def _as_kernel(
    x: Tensor | KernelMatrix, name: str, kind: KernelKind, sigma: float, bandwidth: Bandwidth
) -> Tensor:
    if isinstance(x, KernelMatrix):
        return x.matrix
    if kind not in KERNELS:
        raise ValueError(f"kernel_{name}: expected one of {KERNELS}, got {kind!r}")
    x = flatten_batch(x, name)
    return gaussian_kernel(x, sigma, bandwidth) if kind == "gaussian" else linear_kernel(x)


def hsic(
    x: Tensor | KernelMatrix,
    y: Tensor | KernelMatrix,
    estimator: Estimator = "nocco",
    kernel_x: KernelKind = "gaussian",
    kernel_y: KernelKind = "gaussian",
    sigma: float = 5.0,
    bandwidth: Bandwidth = "scaled",
) -> Tensor:
    """Dependence between two batches of the same examples, as a 0-dim tensor.

    x and y are (m, ...) tensors flattened per example, or precomputed `KernelMatrix` objects.
    `estimator` is "nocco" (default, the paper's numbers), "hsic" (biased) or "nhsic" (normalised, [0, 1]).
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator: expected one of {ESTIMATORS}, got {estimator!r}")
    k = _as_kernel(x, "x", kernel_x, sigma, bandwidth)
    l = _as_kernel(y, "y", kernel_y, sigma, bandwidth)
    if k.shape != l.shape:
        raise ValueError(
            f"x and y: expected the same number of examples, got {k.shape[0]} and {l.shape[0]}"
        )
    if k.dtype != l.dtype:
        l = l.to(k.dtype)
    return estimate(k, l, estimator)
