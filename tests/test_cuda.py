"""CUDA against the CPU: the HSIC estimators, the penalty, the mask scores, every attack, a training step, the
fast path (bf16 autocast, torch.compile), the host-sync guard and one-rank NCCL DDP.

Marked `cuda` and skipped without a GPU; `bash bench/gpu/run.sh check` runs them on one (bench/gpu/README.md).
Comparisons run in true float32 on the GPU (TF32 off), and every random draw (an attack's random start, Square's
windows) is made on the CPU and moved to the device, so that both devices start from the same numbers.
Tolerances are stated where they are used.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import Tensor

import ibrar
from attack_fixtures import test_data, trained_model
from conftest import tiny_config
from ibrar.attacks import build_attack
from ibrar.config import build_config
from ibrar.data import BatchLoader, ImageData, ResidentLoader
from ibrar.host_sync import HostSyncError, forbid_host_sync
from ibrar.hsic import gaussian_kernel, nocco_operator
from ibrar.methods.pgd_at import PGDAT
from ibrar.regularizer import IBRegularizer
from ibrar.train import Trainer

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (bench/gpu/run.sh check)")]

CUDA = torch.device("cuda")
BF16_LOSS_RTOL = 0.02  # bf16 autocast may change the first step's loss by at most 2% (relative)


@pytest.fixture(autouse=True)
def exact_float32():
    """TF32 off: CUDA's float32 then rounds like the CPU's, up to the order of operations."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@contextlib.contextmanager
def draws_on_cpu(seed: int = 0) -> Iterator[None]:
    """torch.rand / randn / randint draw from one CPU generator and move the result to the requested device,
    whatever generator the caller passed: the same call sequence then gets the same numbers on every device."""
    cpu_generator = torch.Generator().manual_seed(seed)
    originals = {name: getattr(torch, name) for name in ("rand", "randn", "randint")}

    def on_cpu(original):
        def draw(*args, device=None, **kwargs):
            kwargs.pop("generator", None)
            out = original(*args, generator=cpu_generator, **kwargs)
            return out.to(device) if device is not None else out

        return draw

    try:
        for name, original in originals.items():
            setattr(torch, name, on_cpu(original))
        yield
    finally:
        for name, original in originals.items():
            setattr(torch, name, original)


def features(seed: int = 0, m: int = 100) -> tuple[Tensor, dict[str, Tensor], Tensor]:
    """Inputs, two layers' outputs that depend on them (and on the labels), and labels; float32, on the CPU."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(m, 3, 8, 8, generator=g)
    y = torch.randint(10, (m,), generator=g)
    conv = torch.tanh(x.repeat(1, 6, 1, 1)[:, :16, :4, :4] + 0.3 * y[:, None, None, None] / 10
                      + 0.1 * torch.randn(m, 16, 4, 4, generator=g))
    fc = torch.relu(x.flatten(1)[:, :32] - 0.5 + 0.05 * torch.randn(m, 32, generator=g))
    return x, {"conv": conv, "fc": fc}, y


# ---- HSIC, the penalty, the mask ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("estimator", ["nocco", "hsic", "nhsic"])
def test_hsic_estimators_agree_on_cpu_and_cuda(estimator, dtype):
    x, feats, _ = features()
    x, t = x.to(dtype), feats["conv"].to(dtype)
    on_cpu = ibrar.hsic(x, t, estimator=estimator)
    on_gpu = ibrar.hsic(x.to(CUDA), t.to(CUDA), estimator=estimator)
    assert on_gpu.device.type == "cuda" and on_gpu.dtype == dtype
    # float32 kernels differ in the last bits between devices, and NOCCO's ridge system amplifies that
    rtol = 2e-3 if dtype == torch.float32 else 1e-7
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, rtol=rtol, atol=1e-6)


def test_the_nocco_solve_runs_in_float64_on_the_device_without_a_host_sync():
    x, _, _ = features()
    k = gaussian_kernel(x.flatten(1))
    k_gpu, x_gpu = k.to(CUDA), x.to(CUDA)
    with forbid_host_sync(CUDA):
        r = nocco_operator(k_gpu)
        value = ibrar.hsic(x_gpu, x_gpu**2)
    assert r.device.type == "cuda" and r.dtype == torch.float64 and value.dtype == torch.float32
    torch.testing.assert_close(r.cpu(), nocco_operator(k), rtol=1e-4, atol=1e-7)


# float32 against a float64 reference, on each device, by relative norm ||a - ref|| / ||ref||. On the CPU float32
# lands at <= 8e-5 on the penalty and the HSIC values and <= 2.2e-4 on the gradients (4 seeds): the kernels' float32
# rounding, amplified by NOCCO's ridge system (condition ~1e5; the solve itself is float64). A device computing
# sound float32 lands in the same range (an H200 differed from the CPU by 3.6e-4 of the largest gradient), so each
# may be ten times the CPU's: far below what a real fault costs (bf16 kernels move the values by several percent).
VALUE_RTOL, GRAD_RTOL = 1e-3, 2e-3


def relative_error(value: Tensor, reference: Tensor) -> float:
    return ((value.detach().cpu().double() - reference).norm() / reference.norm()).item()


def penalty_and_gradients(x: Tensor, feats: dict[str, Tensor], y: Tensor, device: torch.device,
                          dtype: torch.dtype) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """The penalty, each layer's HSIC values and the gradient of the penalty per layer, on `device` in `dtype`."""
    reg = IBRegularizer(["conv", "fc"], num_classes=10)
    leaves = {k: v.detach().to(device, dtype).requires_grad_(True) for k, v in feats.items()}  # fresh leaves
    terms = reg(x.to(device, dtype), y.to(device), leaves)
    terms.loss.backward()
    values = {"loss": terms.loss.detach()} | {f"hsic_x/{k}": v for k, v in terms.hsic_x.items()} | {
        f"hsic_y/{k}": v for k, v in terms.hsic_y.items()}
    return values, {k: v.grad for k, v in leaves.items()}


@pytest.mark.parametrize("seed", [0, 1])
def test_the_penalty_and_its_gradient_match_a_float64_reference_on_cpu_and_cuda(seed):
    x, feats, y = features(seed)
    ref_values, ref_grads = penalty_and_gradients(x, feats, y, torch.device("cpu"), torch.float64)
    for device in (torch.device("cpu"), CUDA):
        values, grads = penalty_and_gradients(x, feats, y, device, torch.float32)
        for key, value in values.items():
            error = relative_error(value, ref_values[key])
            assert error < VALUE_RTOL, f"{key} on {device.type}: relative error {error:.2e} to float64"
        for layer, grad in grads.items():
            error = relative_error(grad, ref_grads[layer])
            assert error < GRAD_RTOL, f"gradient of {layer} on {device.type}: relative error {error:.2e} to float64"


@pytest.mark.parametrize("rule", ["paper", "official"])
def test_mask_scores_and_the_channels_they_drop_agree_on_cpu_and_cuda(rule):
    x, feats, y = features()
    mask = ibrar.ChannelMask(16, num_classes=10, rule=rule, drop_fraction=0.25, official_count=3)
    with_x = rule == "official"
    score_y, score_x = mask.channel_scores(feats["conv"], y, x if with_x else None)
    gpu_y, gpu_x = mask.to(CUDA).channel_scores(feats["conv"].to(CUDA), y.to(CUDA), x.to(CUDA) if with_x else None)
    torch.testing.assert_close(gpu_y.cpu(), score_y, rtol=2e-3, atol=1e-6)
    if with_x:
        torch.testing.assert_close(gpu_x.cpu(), score_x, rtol=2e-3, atol=1e-6)
    assert torch.equal(mask.select(gpu_y, gpu_x).cpu(), mask.select(score_y, score_x))


# ---- the training set on the device ----------------------------------------------------------------------


@pytest.mark.parametrize("augment", [True, False], ids=["augmented", "plain"])
def test_the_resident_loader_gives_the_plain_loaders_batches_on_cuda(augment):
    g = torch.Generator().manual_seed(0)
    data = ImageData(torch.randint(0, 256, (300, 3, 32, 32), dtype=torch.uint8, generator=g),
                     torch.randint(10, (300,), generator=g), [str(c) for c in range(10)])
    options = {"batch_size": 64, "shuffle": True, "augment": augment, "seed": 3, "device": CUDA, "subset": 250}
    plain, resident = BatchLoader(data, **options), ResidentLoader(data, **options)
    assert resident.images.device.type == "cuda" and resident.images.dtype == torch.uint8
    for epoch in (0, 1):
        plain.set_epoch(epoch)
        resident.set_epoch(epoch)
        with forbid_host_sync(CUDA):  # the resident loader neither copies nor waits per batch
            got = list(resident)
        for (xa, ya), (xb, yb) in zip(plain, got, strict=True):
            assert xb.device.type == "cuda" and torch.equal(xa, xb) and torch.equal(ya, yb)


def test_the_trainer_keeps_the_training_set_on_the_gpu_unless_told_not_to(image_folder, tmp_path):
    for resident, expected in ((None, ResidentLoader), (False, BatchLoader)):
        config = tiny_config(image_folder, device="cuda", data={"resident": resident}, train={"epochs": 1})
        trainer = Trainer(build_config(config), tmp_path / str(resident), quiet=True)
        assert type(trainer.train_loader) is expected


# ---- attacks -------------------------------------------------------------------------------------------

ATTACKS = {
    "fgsm": {}, "pgd10": {}, "nifgsm10": {}, "cw20": {}, "fab10": {}, "fab-t10": {}, "apgd-ce20": {},
    "apgd-dlr20": {}, "apgd-t10": {}, "square": {"n_queries": 200},
}


def attack_on_both(name: str, params: dict) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The attack's examples on the CPU and on CUDA (moved back) and the model's predictions on each."""
    model = trained_model()
    x, y = test_data(64)
    gpu_model = copy.deepcopy(model).to(CUDA).eval()

    def run(m, device):
        with draws_on_cpu(0):
            return build_attack(name, m, **params)(x.to(device), y.to(device)).cpu()

    on_cpu, on_gpu = run(model, "cpu"), run(gpu_model, CUDA)
    with torch.no_grad():
        return on_cpu, on_gpu, model(on_cpu).argmax(1), model(on_gpu).argmax(1)


@pytest.mark.parametrize("name", list(ATTACKS))
def test_every_attack_gives_the_same_examples_on_cpu_and_cuda(name, record_property):
    on_cpu, on_gpu, pred_cpu, pred_gpu = attack_on_both(name, dict(ATTACKS[name], seed=0))
    same_pixels = ((on_cpu - on_gpu).abs() <= 1e-3).float().mean().item()
    same_outcome = (pred_cpu == pred_gpu).float().mean().item()
    record_property("same_pixels", same_pixels)
    record_property("same_outcome", same_outcome)
    # An attack that follows a gradient's sign may flip a pixel whose gradient is ~0 on one device; a random
    # search may take another branch on a near tie. Tolerance: 98% of pixels within 1e-3, 95% same prediction.
    assert same_pixels >= 0.98 and same_outcome >= 0.95, (name, same_pixels, same_outcome)


def test_the_adaptive_attack_takes_the_same_first_step_and_is_as_strong_on_cpu_and_cuda(record_property):
    # HSIC is a batch statistic: every example's gradient depends on the whole batch, so one sign that flips on
    # a ~0 gradient moves every later step apart (measured on an H200: 71% of pixels equal after 10 steps).
    # What must agree is the objective's gradient sign at the first step, and the attack's strength.
    reg = IBRegularizer(["fc1"], num_classes=10)
    first = attack_on_both("adaptive1", {"regularizer": reg, "random_start": False, "seed": 0})
    on_cpu, on_gpu, pred_cpu, pred_gpu = attack_on_both("adaptive10", {"regularizer": reg, "seed": 0})
    y = test_data(64)[1]
    first_step_pixels = ((first[0] - first[1]).abs() <= 1e-3).float().mean().item()
    robust_cpu, robust_gpu = (pred_cpu == y).float().mean().item(), (pred_gpu == y).float().mean().item()
    record_property("first_step_same_pixels", first_step_pixels)
    record_property("robust_cpu_cuda", [robust_cpu, robust_gpu])
    assert first_step_pixels >= 0.98, first_step_pixels
    assert abs(robust_cpu - robust_gpu) <= 4 / 64 + 1e-9, (robust_cpu, robust_gpu)  # four of 64 may differ


def test_the_reference_autoattack_finds_the_same_robust_examples_on_cpu_and_cuda(record_property):
    model = trained_model()
    x, y = test_data(64)
    gpu_model = copy.deepcopy(model).to(CUDA).eval()
    budget = {"n_iter": 20, "n_queries": 200, "seed": 0}  # the reference's random draws are its own, per device
    on_cpu = build_attack("autoattack", model, **budget).run(x, y)
    on_gpu = build_attack("autoattack", gpu_model, **budget).run(x.to(CUDA), y.to(CUDA))
    same = (on_cpu.robust == on_gpu.robust.cpu()).float().mean().item()
    record_property("same_robust_flags", same)
    record_property("stages_cpu_cuda", [on_cpu.stages, on_gpu.stages])
    assert same >= 0.95, (same, on_cpu.stages, on_gpu.stages)
    assert abs(on_cpu.accuracy - on_gpu.accuracy) <= 3 / 64 + 1e-9


# ---- the training step -------------------------------------------------------------------------------


def step_config(image_folder: Path, device: str, n: int = 16, **train: object) -> dict:
    """PGD-AT + IB-RAR (IB terms and channel mask) on the tiny image folder, `n` examples (one step at 16)."""
    return tiny_config(
        image_folder, device=device, method={"name": "pgd_at", "steps": 2},
        data={"batch_size": 16, "augment": False, "train_subset": n},
        ib={"enabled": True}, mask={"enabled": True, "drop_fraction": 0.25, "refresh_every": 2},
        train={"epochs": 1, "eval_subset": 0, "info_plane_every": 0, **train},
    )


def one_epoch(config: dict, run_dir: Path, compile_fullgraph: bool = False,
              cpu_draws: bool = True) -> tuple[Trainer, dict]:
    """One epoch; `cpu_draws=False` leaves the random draws on the device (a CPU draw moved to CUDA is a
    host-to-device copy, which CUDA's sync debug mode reports as a synchronisation)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(build_config(config), run_dir, quiet=True)
    if compile_fullgraph:  # as train.compile does, but any graph break raises instead of splitting the graph
        torch._dynamo.reset()
        trainer.train_model = torch.compile(trainer.model, fullgraph=True)
    with draws_on_cpu(0) if cpu_draws else contextlib.nullcontext():
        means = trainer.train_epoch(0)
    return trainer, means


def test_a_checkpoint_written_on_cuda_resumes_on_cuda(image_folder, tmp_path):
    # map_location puts the saved CUDA RNG states on the GPU; torch.cuda.set_rng_state_all takes CPU tensors only
    config = step_config(image_folder, "cuda")
    trained, _ = one_epoch(config, tmp_path / "run")
    trained.save_checkpoint()
    rng = torch.cuda.get_rng_state_all()
    torch.cuda.manual_seed_all(12345)
    resumed = Trainer(build_config(config), tmp_path / "run", quiet=True)
    assert resumed.load_checkpoint()
    assert_same_weights(trained, resumed, rtol=0, atol=0)
    assert all(torch.equal(a, b) for a, b in zip(torch.cuda.get_rng_state_all(), rng, strict=True))


def assert_same_weights(a: Trainer, b: Trainer, rtol: float, atol: float) -> None:
    for (key, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        if va.is_floating_point():
            torch.testing.assert_close(vb.cpu(), va.cpu(), rtol=rtol, atol=atol, msg=key)
        else:
            assert torch.equal(vb.cpu(), va.cpu()), key


def test_a_pgd_at_ib_rar_step_in_fp32_agrees_on_cpu_and_cuda(image_folder, tmp_path):
    cpu, cpu_means = one_epoch(step_config(image_folder, "cpu"), tmp_path / "cpu")
    gpu, gpu_means = one_epoch(step_config(image_folder, "cuda"), tmp_path / "cuda")
    assert gpu.device.type == "cuda"
    for key in ("loss", "ib_penalty"):
        assert gpu_means[key] == pytest.approx(cpu_means[key], rel=1e-3, abs=1e-5), key
    assert abs(gpu_means["train_acc"] - cpu_means["train_acc"]) <= 1 / 16 + 1e-6  # one near-tie may flip
    assert_same_weights(cpu, gpu, rtol=1e-3, atol=1e-5)
    assert torch.equal(gpu.mask.mask.cpu(), cpu.mask.mask)


def test_bf16_autocast_changes_the_loss_little_and_keeps_hsic_and_the_attack_in_fp32(image_folder, tmp_path,
                                                                                      monkeypatch):
    _, fp32 = one_epoch(step_config(image_folder, "cuda"), tmp_path / "fp32")
    logits_dtypes: list[torch.dtype] = []
    hsic_dtypes: list[torch.dtype] = []
    original_call = IBRegularizer.__call__

    def recording_call(self, *args, **kwargs):
        terms = original_call(self, *args, **kwargs)
        hsic_dtypes.extend([terms.loss.dtype, *(v.dtype for v in terms.hsic_x.values())])
        return terms

    monkeypatch.setattr(IBRegularizer, "__call__", recording_call)
    config = step_config(image_folder, "cuda", amp=True, channels_last=True)
    run_dir = tmp_path / "bf16"
    run_dir.mkdir()
    trainer = Trainer(build_config(config), run_dir, quiet=True)
    trainer.model.register_forward_hook(lambda _m, _i, out: logits_dtypes.append(out.dtype))
    with draws_on_cpu(0):
        bf16 = trainer.train_epoch(0)
    # the inner PGD (2 steps) in float32, then the training forward under autocast
    assert logits_dtypes == [torch.float32, torch.float32, torch.bfloat16]
    assert hsic_dtypes and set(hsic_dtypes) == {torch.float32}
    assert abs(bf16["loss"] - fp32["loss"]) <= BF16_LOSS_RTOL * abs(fp32["loss"]), (bf16["loss"], fp32["loss"])


def test_torch_compile_traces_the_step_with_taps_and_mask_in_one_graph_and_matches_eager(image_folder, tmp_path):
    # two batches: the first rescores the mask inside the compiled forward, the second applies it
    eager, eager_means = one_epoch(step_config(image_folder, "cuda", n=32), tmp_path / "eager")
    compiled, compiled_means = one_epoch(step_config(image_folder, "cuda", n=32), tmp_path / "compiled",
                                         compile_fullgraph=True)
    assert compiled_means["loss"] == pytest.approx(eager_means["loss"], rel=1e-3)
    assert compiled_means["ib_penalty"] == pytest.approx(eager_means["ib_penalty"], rel=1e-3, abs=1e-5)
    assert_same_weights(eager, compiled, rtol=1e-3, atol=1e-4)
    assert torch.equal(eager.mask.mask, compiled.mask.mask)


def test_two_compiled_trainers_in_one_process_each_run_their_own_taps(image_folder, tmp_path):
    # bench_fast_path builds every trainer first: without hook guards, the IB-RAR model reused the plain
    # PGD-AT graph (same class, no taps) and its penalty read the inner attack's freed outputs
    plain = step_config(image_folder, "cuda", compile=True)
    plain["ib"], plain["mask"] = {"enabled": False}, {"enabled": False}
    trainers = []
    for name, config in (("plain", plain), ("ibrar", step_config(image_folder, "cuda", compile=True))):
        (tmp_path / name).mkdir()
        trainers.append(Trainer(build_config(config), tmp_path / name, quiet=True))
    means = [trainer.train_epoch(0) for trainer in trainers]
    assert all(math.isfinite(m["loss"]) for m in means) and math.isfinite(means[1]["ib_penalty"])


@pytest.mark.parametrize("fast_path", [{}, {"amp": True, "channels_last": True}], ids=["fp32", "bf16-cl"])
def test_forbid_host_sync_passes_under_cuda_sync_debug_mode_error(image_folder, tmp_path, fast_path):
    config = step_config(image_folder, "cuda", n=32, forbid_host_sync=True, **fast_path)
    _, means = one_epoch(config, tmp_path / "run", cpu_draws=False)  # raises HostSyncError at the first sync
    assert torch.cuda.get_sync_debug_mode() == 0 and means["loss"] > 0


def test_the_cuda_sync_check_is_armed(image_folder, tmp_path, monkeypatch):
    original = PGDAT.loss

    def loss_with_a_read(self, forward, x, y, x_adv):
        out = original(self, forward, x, y, x_adv)
        torch.Tensor.__bool__.__wrapped__(out.loss > 0)  # bypass the Python-level guard: CUDA's mode must see it
        return out

    monkeypatch.setattr(PGDAT, "loss", loss_with_a_read)
    with pytest.raises(HostSyncError):
        one_epoch(step_config(image_folder, "cuda", forbid_host_sync=True), tmp_path / "run", cpu_draws=False)


# ---- one-rank NCCL DDP ----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _nccl_worker(rank: int, port: int, config: dict, out: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # as exact_float32 does
    torch.cuda.set_device(0)
    torch.distributed.init_process_group("nccl", rank=rank, world_size=1)
    try:
        ones = torch.ones(3, device=CUDA)
        torch.distributed.all_reduce(ones)
        trainer = Trainer(build_config(config), Path(out) / "ddp", quiet=True)
        trainer.train_model = torch.nn.parallel.DistributedDataParallel(trainer.model, device_ids=[0])
        with draws_on_cpu(0):
            means = trainer.train_epoch(0)
        state = {k: v.cpu() for k, v in trainer.model.state_dict().items()}
        torch.save({"model": state, "loss": means["loss"], "all_reduce": ones.cpu()}, Path(out) / "rank0.pt")
    finally:
        torch.distributed.destroy_process_group()


def test_one_rank_nccl_ddp_runs_a_step_like_a_single_process(image_folder, tmp_path):
    config = step_config(image_folder, "cuda")
    (tmp_path / "ddp").mkdir()
    mp.spawn(_nccl_worker, args=(_free_port(), config, str(tmp_path)), nprocs=1, join=True)
    ddp = torch.load(tmp_path / "rank0.pt", weights_only=True)
    single, means = one_epoch(config, tmp_path / "single")
    assert torch.equal(ddp["all_reduce"], torch.ones(3))
    assert ddp["loss"] == pytest.approx(means["loss"], rel=1e-5)
    for key, value in single.model.state_dict().items():
        torch.testing.assert_close(ddp["model"][key], value.cpu(), rtol=1e-5, atol=1e-6, msg=key)
