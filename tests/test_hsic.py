"""HSIC estimators: float64 references written from the formulas, the laws, gradients and bad input."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import ibrar
from ibrar.hsic import KernelMatrix, gaussian_kernel, kernel_matrix, linear_kernel, nocco, nocco_low_rank

# ---- references, straight from METHOD.md section 2, in float64 NumPy with explicit loops/inverses ----


def ref_gaussian(x: np.ndarray, sigma: float = 5.0) -> np.ndarray:
    m, d = x.shape
    k = np.empty((m, m))
    for i in range(m):
        for j in range(m):
            k[i, j] = math.exp(-np.sum((x[i] - x[j]) ** 2) / (2 * sigma**2 * d))
    return k


def ref_hsic(k: np.ndarray, l: np.ndarray) -> float:
    m = k.shape[0]
    h = np.eye(m) - np.ones((m, m)) / m
    return float(np.trace(k @ h @ l @ h) / (m - 1) ** 2)


def ref_nhsic(k: np.ndarray, l: np.ndarray) -> float:
    return ref_hsic(k, l) / math.sqrt(ref_hsic(k, k) * ref_hsic(l, l))


def ref_nocco(k: np.ndarray, l: np.ndarray, eps: float = 1e-5) -> float:
    m = k.shape[0]
    h = np.eye(m) - np.ones((m, m)) / m
    kc, lc = k @ h, l @ h
    rx = kc @ np.linalg.inv(kc + eps * m * np.eye(m))
    ry = lc @ np.linalg.inv(lc + eps * m * np.eye(m))
    return float(np.trace(rx @ ry))


REFERENCES = {"hsic": ref_hsic, "nhsic": ref_nhsic, "nocco": ref_nocco}


def dependent_pair(m: int = 24, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, 5, generator=g, dtype=torch.float64)
    y = torch.cat([x[:, :2] ** 2, torch.randn(m, 3, generator=g, dtype=torch.float64)], dim=1)
    return x, y


@pytest.mark.parametrize("estimator", ["hsic", "nhsic", "nocco"])
def test_estimators_match_float64_reference_with_gaussian_kernels(estimator):
    x, y = dependent_pair()
    got = ibrar.hsic(x, y, estimator=estimator)
    want = REFERENCES[estimator](ref_gaussian(x.numpy()), ref_gaussian(y.numpy()))
    assert got.dtype == torch.float64 and got.dim() == 0
    assert got.item() == pytest.approx(want, rel=1e-8, abs=1e-10)


@pytest.mark.parametrize("estimator", ["hsic", "nhsic", "nocco"])
def test_estimators_match_reference_with_linear_label_kernel(estimator):
    x, _ = dependent_pair()
    labels = torch.arange(x.shape[0]) % 3
    y = torch.nn.functional.one_hot(labels, 3).double()
    got = ibrar.hsic(x, y, estimator=estimator, kernel_y="linear")
    yn = y.numpy()
    want = REFERENCES[estimator](ref_gaussian(x.numpy()), yn @ yn.T)
    assert got.item() == pytest.approx(want, rel=1e-7, abs=1e-10)


def test_float32_agrees_with_float64():
    x, y = dependent_pair(m=64)
    for estimator in ("hsic", "nhsic", "nocco"):
        v64 = ibrar.hsic(x, y, estimator=estimator)
        v32 = ibrar.hsic(x.float(), y.float(), estimator=estimator)
        assert v32.dtype == torch.float32
        assert v32.item() == pytest.approx(v64.item(), rel=1e-3, abs=1e-5)


def test_inputs_of_any_shape_are_flattened_per_example():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(10, 3, 4, 4, generator=g, dtype=torch.float64)
    y = torch.rand(10, 2, 5, generator=g, dtype=torch.float64)
    assert torch.equal(ibrar.hsic(x, y), ibrar.hsic(x.flatten(1), y.flatten(1)))


def test_precomputed_kernel_matrix_gives_the_same_value():
    x, y = dependent_pair()
    kx = kernel_matrix(x)
    assert isinstance(kx, KernelMatrix)
    for estimator in ("hsic", "nhsic", "nocco"):
        assert torch.allclose(ibrar.hsic(kx, y, estimator=estimator), ibrar.hsic(x, y, estimator=estimator))


def test_low_rank_nocco_equals_nocco_with_the_linear_label_kernel():
    x, _ = dependent_pair()
    labels = torch.arange(x.shape[0]) % 4
    y = torch.nn.functional.one_hot(labels, 5).double()  # one class never occurs: rank below c
    k = torch.stack([gaussian_kernel(x), gaussian_kernel(x[:, :2])])
    want = nocco(k, linear_kernel(y))
    assert torch.allclose(nocco_low_rank(k, y), want, rtol=1e-8, atol=1e-10)
    assert nocco_low_rank(k.float(), y.float()).dtype == torch.float32


def test_median_bandwidth_uses_median_squared_distance():
    x, _ = dependent_pair(m=9)
    d2 = torch.cdist(x, x) ** 2
    med = d2[~torch.eye(9, dtype=torch.bool)].median()
    want = torch.exp(-d2 / (2 * med))
    got = gaussian_kernel(x, bandwidth="median")
    # torch.median picks the lower of the two middle values; so does nanmedian: same convention.
    assert torch.allclose(got, want, atol=1e-10)


def test_batched_kernels_equal_per_matrix_kernels():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 7, 3, generator=g, dtype=torch.float64)
    batched = gaussian_kernel(x)
    for c in range(4):
        assert torch.allclose(batched[c], gaussian_kernel(x[c]))
    assert torch.allclose(linear_kernel(x)[1], x[1] @ x[1].T)


# ---- laws ----

finite_batches = arrays(
    np.float64,
    st.tuples(st.integers(2, 12), st.integers(1, 6)),
    elements=st.floats(-50, 50, allow_nan=False, allow_infinity=False),
)


@settings(max_examples=40, deadline=None)
@given(finite_batches, st.sampled_from(["hsic", "nhsic", "nocco"]), st.randoms(use_true_random=False))
def test_symmetric_and_invariant_to_joint_permutation(xs, estimator, rnd):
    x = torch.from_numpy(xs)
    y = torch.from_numpy(np.tanh(xs[:, ::-1].copy()) + 0.1 * xs)
    v = ibrar.hsic(x, y, estimator=estimator)
    assert torch.isfinite(v)
    assert ibrar.hsic(y, x, estimator=estimator).item() == pytest.approx(v.item(), rel=1e-6, abs=1e-8)
    perm = list(range(x.shape[0]))
    rnd.shuffle(perm)
    perm = torch.tensor(perm)
    assert ibrar.hsic(x[perm], y[perm], estimator=estimator).item() == pytest.approx(v.item(), rel=1e-6, abs=1e-8)


@settings(max_examples=40, deadline=None)
@given(finite_batches, finite_batches)
def test_nhsic_lies_in_unit_interval_and_nothing_is_nan(xs, ys):
    m = min(xs.shape[0], ys.shape[0])
    x, y = torch.from_numpy(xs[:m]), torch.from_numpy(ys[:m])
    for estimator in ("hsic", "nhsic", "nocco"):
        for kernel in ("gaussian", "linear"):
            v = ibrar.hsic(x, y, estimator=estimator, kernel_x=kernel, kernel_y=kernel)
            assert torch.isfinite(v), (estimator, kernel)
    v = ibrar.hsic(x, y, estimator="nhsic")
    assert 0.0 <= v.item() <= 1.0


def test_nhsic_is_one_for_identical_inputs():
    x, _ = dependent_pair()
    assert ibrar.hsic(x, x, estimator="nhsic").item() == pytest.approx(1.0, abs=1e-9)


def test_nhsic_is_near_zero_for_independent_inputs():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(400, 2, generator=g, dtype=torch.float64)
    y = torch.randn(400, 2, generator=g, dtype=torch.float64)
    assert ibrar.hsic(x, y, estimator="nhsic").item() < 0.05
    # A nonlinear dependence shows once the bandwidth fits the data's scale.
    assert ibrar.hsic(x, y, estimator="nhsic", bandwidth="median").item() < 0.05
    assert ibrar.hsic(x, x**2, estimator="nhsic", bandwidth="median").item() > 0.2


@pytest.mark.parametrize("estimator", ["hsic", "nhsic", "nocco"])
def test_constant_and_duplicated_examples_give_finite_values_and_gradients(estimator):
    x = torch.ones(8, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randn(8, 3, dtype=torch.float64)
    v = ibrar.hsic(x, y, estimator=estimator)
    assert torch.isfinite(v) and v.item() == pytest.approx(0.0, abs=1e-9)
    (g,) = torch.autograd.grad(v, x)
    assert torch.isfinite(g).all()
    dup = torch.cat([y[:4], y[:4]]).requires_grad_(True)
    v = ibrar.hsic(dup, y, estimator=estimator, bandwidth="median")
    (g,) = torch.autograd.grad(v, dup)
    assert torch.isfinite(v) and torch.isfinite(g).all()


@pytest.mark.parametrize("estimator", ["hsic", "nhsic", "nocco"])
def test_gradcheck_in_float64(estimator):
    g = torch.Generator().manual_seed(4)
    x = torch.randn(6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(6, 2, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: ibrar.hsic(a, b, estimator=estimator, sigma=0.7), (x, y))


def test_result_stays_on_input_device_and_dtype():
    x, y = dependent_pair()
    v = ibrar.hsic(x.float(), y.float())
    assert v.device == x.device and v.dtype == torch.float32


# ---- bad input ----


def test_mismatched_batch_sizes_are_rejected():
    with pytest.raises(ValueError, match="same number of examples"):
        ibrar.hsic(torch.randn(5, 2), torch.randn(6, 2))


def test_batch_of_one_is_rejected():
    with pytest.raises(ValueError, match="at least 2"):
        ibrar.hsic(torch.randn(1, 2), torch.randn(1, 2))


def test_integer_tensor_is_rejected():
    with pytest.raises(ValueError, match="floating-point"):
        ibrar.hsic(torch.ones(4, 2, dtype=torch.long), torch.randn(4, 2))


@pytest.mark.parametrize("kwargs, name", [({"estimator": "cka"}, "estimator"), ({"kernel_x": "rbf"}, "kernel_x"),
                                          ({"bandwidth": "auto"}, "bandwidth")])
def test_unknown_names_are_rejected_with_the_argument_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        ibrar.hsic(torch.randn(4, 2), torch.randn(4, 2), **kwargs)


@pytest.mark.parametrize("estimator", ["nocco", "hsic", "nhsic"])
def test_an_estimate_under_cpu_bf16_autocast_equals_the_float32_one(estimator):
    g = torch.Generator().manual_seed(0)
    x, t = torch.rand(100, 3, 8, 8, generator=g), torch.randn(100, 16, 4, 4, generator=g)
    y = torch.randint(10, (100,), generator=g)
    onehot = torch.nn.functional.one_hot(y, 10).float()
    plain = ibrar.hsic(x, t, estimator=estimator), nocco_low_rank(gaussian_kernel(t.flatten(1)), onehot)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_amp = ibrar.hsic(x, t, estimator=estimator), nocco_low_rank(gaussian_kernel(t.flatten(1)), onehot)
    for a, b in zip(under_amp, plain, strict=True):
        assert a.dtype == torch.float32 and torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_features_give_the_float32_estimate_not_nan(dtype):
    torch.manual_seed(0)
    x, y = (10 * torch.randn(8, 512)).to(dtype), torch.randn(8, 4).to(dtype)
    reference = ref_hsic(ref_gaussian(x.double().numpy()), ref_gaussian(y.double().numpy()))
    got = ibrar.hsic(x, y, estimator="hsic")
    assert torch.isfinite(got) and got.item() == pytest.approx(reference, rel=1e-3)
    assert torch.isfinite(ibrar.hsic(x, y, estimator="nocco"))
