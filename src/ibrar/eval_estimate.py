"""How long an evaluation will take: a plan of its pieces, printed before `ibrar eval` starts and refined live.

The cost of one forward+backward pass per example (and of a forward alone) is measured on a batch of the
evaluated examples; each piece (an attack, an AutoAttack stage, the masking check, a steps curve) costs its
gradient computations per attacked example times the examples it attacks. Attacks run on the clean-correct
examples; AutoAttack's stages after APGD-CE run only on what the earlier stages leave, so they are counted on a
prior for that number: the share a short APGD-CE on the measured batch leaves robust (`expected_share`),
replaced by the count a PGD-type attack of the evaluation leaves once it has run. `ibrar.eval_progress` keeps
the plan up to date as the pieces finish (their measured times rescale what is left). It is an estimate, and
says so.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ibrar.attacks import APGD, Attack, ReferenceAutoAttack
from ibrar.attacks.reference_autoattack import DEFAULT_BATCH_SIZE as AUTOATTACK_BATCH
from ibrar.attacks.reference_autoattack import STAGE_LABELS, STAGES
from ibrar.modes import eval_mode

# AutoAttack's first stage, cut short: what it leaves robust on the measured batch is the prior for the later
# stages (PGD-10 leaves a few examples APGD-CE breaks, and each costs thousands of gradients there).
PROBE_STEPS = 20
SMALL_BATCH = 8  # the second batch size the probe times
ATTACK_BATCH = 256  # ibrar.evaluate's default batch for its own attacks (AutoAttack keeps the reference's 250)
FAB_STEP = 2.5  # gradients' worth of one FAB-T step: FAB-T took 2.7x APGD-T's time per example on both bench models
FORWARD_SHARE = 1 / 3  # a forward pass costs about a third of a forward+backward (used when not measured)
LARGE_EPS_CHECK = "masking check: pgd20 at eps 0.5"  # the piece `masking_warnings(large_eps=0.5)` runs
_PGD_TYPE = ("PGD", "APGD", "APGDT", "AdaptivePGD")  # their survivors predict AutoAttack's later stages'


def stage_piece_name(stage: str) -> str:
    """The progress name of one AutoAttack stage: ``"autoattack APGD-T"``."""
    return f"autoattack {STAGE_LABELS[stage]}"


CURVE_PREFIX = "steps curve "  # a steps curve's pieces: "steps curve pgd5"


def curve_piece_name(family: str, steps: int) -> str:
    return f"{CURVE_PREFIX}{family}{steps}"


def autoattack_stage_counts(attack: ReferenceAutoAttack, num_classes: int,
                            forward_share: float = FORWARD_SHARE) -> dict[str, float]:
    """Forward+backward passes each AutoAttack stage spends on one example it attacks (its full budget)."""
    p = attack.params()
    targets = p["n_target_classes"] if p["n_target_classes"] is not None else min(9, num_classes - 1)
    n_iter, n_queries = p["budget"]["n_iter"], p["budget"]["n_queries"]
    # a FAB step is a gradient, a projection onto the linearised decision boundary and a forward (is the new
    # point adversarial?): measured at about FAB_STEP gradients on CIFAR-sized CNNs (bench/bench_estimate.py);
    # a Square query is a forward
    return {"apgd-ce": float(n_iter), "apgd-t": float(targets * n_iter), "fab-t": FAB_STEP * targets * n_iter,
            "square": forward_share * n_queries}


def gradient_count(attack: Attack | ReferenceAutoAttack, num_classes: int,
                   forward_share: float = FORWARD_SHARE) -> float:
    """Forward+backward passes the attack spends on one attacked example (its full budget; AutoAttack as if
    every stage ran on the example)."""
    p = attack.params()
    kind = type(attack).__name__
    steps = p.get("steps", 1)
    if isinstance(attack, ReferenceAutoAttack):
        return sum(autoattack_stage_counts(attack, num_classes, forward_share).values())
    if kind == "FGSM":
        return 1.0
    if kind == "Square":
        return forward_share * p["n_queries"]
    if kind == "FAB":  # untargeted FAB takes the gradient of every class's logit at each step
        per_step = 1 if p.get("targeted") else num_classes
        targets = min(p.get("n_target_classes", 1), num_classes - 1) if p.get("targeted") else 1
        return float(steps * per_step * targets * p.get("n_restarts", 1))
    if kind == "APGDT":
        return float(steps * min(p["n_target_classes"], num_classes - 1) * p.get("n_restarts", 1))
    return float(steps * p.get("restarts", p.get("n_restarts", 1)) * p.get("m", 1))


@dataclass
class Probe:
    """What was measured on a batch of the evaluated examples."""

    seconds_per_grad: float  # one forward+backward of one example
    forward_share: float  # a forward alone, as a share of that
    clean: float  # accuracy on the batch
    survive: float | None  # share a short APGD-CE is expected to leave robust (`expected_share`; None: not measured)
    seconds_per_call: float = 0.0  # what a forward+backward costs whatever its batch size (kernel launches, Python)


def expected_share(hits: int, trials: int) -> float:
    """The share of the evaluated examples expected to behave as `hits` of the probe's `trials` did: the posterior
    mean under a Jeffreys prior, (hits + 1/2) / (trials + 1). A probe batch that APGD-CE breaks whole does not
    mean AutoAttack's later stages will have nothing to attack in a larger evaluation, where each survivor costs
    thousands of gradients."""
    return (hits + 0.5) / (trials + 1)


def _timed(fn: Callable[[], object], cuda: bool, repeats: int = 2) -> float:
    fn()  # warm-up (allocations, cuDNN's choice of kernels)
    times = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sum(times) / len(times)


def probe(model: nn.Module, x: Tensor, y: Tensor, eps: float = 8 / 255, survivors: bool = False) -> Probe:
    """Time a forward+backward and a forward on ``x``; with ``survivors``, also run a 20-step APGD-CE on it (the
    prior for AutoAttack's later stages). The model is measured in eval mode and its modes are restored."""
    cuda = x.device.type == "cuda"

    def step() -> None:
        xg = x.detach().requires_grad_(True)
        torch.autograd.grad(F.cross_entropy(model(xg), y), xg)

    def small_step() -> None:
        xg = x[:SMALL_BATCH].detach().requires_grad_(True)
        torch.autograd.grad(F.cross_entropy(model(xg), y[:SMALL_BATCH]), xg)

    with eval_mode(model):
        with torch.enable_grad():
            big = _timed(step, cuda)
            small = _timed(small_step, cuda) if len(x) >= 4 * SMALL_BATCH else None
        # two batch sizes give a cost per example and one per call: the few examples AutoAttack's later stages
        # attack pay mostly the latter
        per_grad, per_call = big / len(x), 0.0
        if small is not None and big > small:
            per_grad = (big - small) / (len(x) - SMALL_BATCH)
            per_call = max(0.0, small - per_grad * SMALL_BATCH)
        with torch.no_grad():
            per_forward = _timed(lambda: model(x), cuda) / len(x)
            correct = model(x).argmax(1) == y
        survive = None
        if survivors:
            with torch.random.fork_rng(devices=[x.device] if cuda else []):
                torch.manual_seed(0)
                x_adv = APGD(model, eps=eps, steps=PROBE_STEPS, seed=0)(x[correct], y[correct]) \
                    if correct.any() else x[:0]
            with torch.no_grad():
                robust = int((model(x_adv).argmax(1) == y[correct]).sum()) if len(x_adv) else 0
            survive = expected_share(robust, len(x))
    share = min(1.0, per_forward / per_grad) if per_grad > 0 else FORWARD_SHARE
    return Probe(per_grad, share, correct.float().mean().item(), survive, per_call)


@dataclass
class Piece:
    """One timed part of an evaluation: ``grads`` forward+backward passes on each of ``examples`` examples."""

    name: str
    grads: float
    examples: float
    batch: int = 256  # examples per call
    survivors: bool = False  # an AutoAttack stage after APGD-CE: runs on what the earlier stages leave
    informs_survivors: bool = False  # a PGD-type attack at the evaluation's eps: its survivors are the prior
    counted: bool = False  # ``examples`` is read from an interrupted run's progress (a resumed stage's 0, or what
    # it left robust), not a prior: what the attacks before it leave does not replace it
    expected: bool = False  # ``examples`` is an expected count (the survivors' prior), not a count of examples

    def calls(self) -> float:
        """Calls of one batch each. For an expected count below a batch, the expected number of calls: the chance
        that any example reaches the piece, 1 - exp(-examples) for a Poisson count (0.26 for 0.3 expected
        examples, where a whole call per gradient was charged before)."""
        if self.examples <= 0:
            return 0.0
        if self.expected and self.examples < self.batch:
            return 1.0 - math.exp(-self.examples)
        return float(math.ceil(self.examples / self.batch))

    def seconds(self, probe: Probe) -> float:
        return self.grads * (self.examples * probe.seconds_per_grad + self.calls() * probe.seconds_per_call)


@dataclass
class EvalPlan:
    """The pieces of one evaluation in the order they run, and the measured costs that price them."""

    n: int
    probe: Probe
    pieces: list[Piece] = field(default_factory=list)
    seconds_at_start: float | None = None  # the estimate as printed, before the pieces rescaled the plan
    resumed: list[str] = field(default_factory=list)  # AutoAttack stages an interrupted run already finished

    @property
    def survivors(self) -> float:
        """Examples expected to reach AutoAttack's next stage after APGD-CE (the current prior, or the count an
        interrupted run left)."""
        return next((p.examples for p in self.pieces if p.survivors and p.examples > 0), 0.0)

    def seconds(self) -> float:
        """The whole evaluation: a clean forward on all ``n`` plus every piece."""
        clean_pass = self.n * self.probe.forward_share * self.probe.seconds_per_grad
        return clean_pass + sum(p.seconds(self.probe) for p in self.pieces)

    def describe(self) -> str:
        p = self.probe
        how = (f"{p.seconds_per_grad * 1e3:.2f} ms per forward+backward per example, x the attacks' gradient "
               f"counts, on the {p.clean:.0%} of {self.n} examples classified correctly")
        if self.resumed:
            how += (f"; AutoAttack resumes after {STAGE_LABELS[self.resumed[-1]]} (finished by an earlier call), "
                    f"its other stages on the {self.survivors:.0f} examples that call left robust")
        elif any(piece.survivors for piece in self.pieces):
            expected = f"{self.survivors:.1f}" if self.survivors < 10 else f"{self.survivors:.0f}"  # 0.3, not 0
            how += (f"; AutoAttack's stages after APGD-CE on the {expected} examples expected to survive "
                    f"it (a {PROBE_STEPS}-step APGD-CE on a measured batch), updated as the evaluation runs")
        return how


def plan_evaluation(model: nn.Module, x: Tensor, y: Tensor, n: int,
                    attacks: Mapping[str, Attack | ReferenceAutoAttack], eps: float = 8 / 255,
                    large_eps_check: bool = False, curve_steps: Sequence[int] = (),
                    curve_families: Sequence[str] = ("pgd", "cw", "nifgsm"),
                    measured: Probe | None = None, batch_size: int | None = None,
                    finished: Mapping[str, Mapping[str, int]] | None = None) -> EvalPlan:
    """The plan of an evaluation of ``attacks`` on ``n`` examples like the batch ``x`` (as `ibrar eval` runs it:
    the attacks, then the steps curves when ``curve_steps`` is given, then the large-eps masking check), in
    batches of ``batch_size`` (None: 256 for ibrar's attacks, 250 for AutoAttack). ``finished``: per AutoAttack
    attack, what an interrupted run left (`ReferenceAutoAttack.finished_stages`): its finished stages cost
    nothing and the others are priced on the count it left robust."""
    with_autoattack = any(isinstance(a, ReferenceAutoAttack) for a in attacks.values())
    found = measured if measured is not None else probe(model, x, y, eps, survivors=with_autoattack)
    with torch.no_grad(), eval_mode(model):
        num_classes = int(model(x[:1]).shape[1])
    evaluate_share = 2 * found.forward_share  # after each batch: the logits of the adversarial and clean images
    batch = batch_size or ATTACK_BATCH
    correct = found.clean * n
    pieces: list[Piece] = []
    resumed: list[str] = []
    for name, attack in attacks.items():
        if isinstance(attack, ReferenceAutoAttack):
            survive = found.survive if found.survive is not None else found.clean
            counts = autoattack_stage_counts(attack, num_classes, found.forward_share)
            done = (finished or {}).get(name, {})
            resumed += [stage for stage in STAGES if stage in done]
            left = next((done[s] for s in (*STAGES[::-1], "clean") if s in done), None)  # robust when it stopped
            resumes_at = next((s for s in STAGES if s not in done), None) if left is not None else None
            for stage in STAGES:
                later = stage != STAGES[0]
                examples = survive * n if later else correct
                if stage in done:
                    examples = 0  # finished: the resumed run skips it
                elif stage == resumes_at:
                    examples = left  # exactly what the interrupted run left robust
                elif left is not None:
                    examples = min(examples, left)  # a prior again, bounded by that count
                counted = stage in done or stage == resumes_at
                pieces.append(Piece(stage_piece_name(stage), counts[stage] + found.forward_share, examples,
                                    batch_size or AUTOATTACK_BATCH, survivors=later, counted=counted,
                                    expected=later and not counted))
            continue
        norm, bound = attack.threat_model
        informs = type(attack).__name__ in _PGD_TYPE and norm == "linf" and bound is not None \
            and abs(bound - eps) < 1e-9
        pieces.append(Piece(name, gradient_count(attack, num_classes, found.forward_share) + evaluate_share,
                            correct, batch, informs_survivors=informs))
    for family in curve_families if curve_steps else ():
        for s in curve_steps:
            pieces.append(Piece(curve_piece_name(family, s), float(s) + evaluate_share, correct, batch))
    if large_eps_check:
        pieces.append(Piece(LARGE_EPS_CHECK, 20 + evaluate_share, correct, batch))
    return EvalPlan(n, found, pieces, resumed=resumed)


def estimate_seconds(model: nn.Module, x: Tensor, y: Tensor, n: int,
                     attacks: Mapping[str, Attack | ReferenceAutoAttack]) -> tuple[float, str]:
    """Estimated seconds for ``attacks`` on ``n`` examples like ``x`` (a batch of them), and how it was made."""
    plan = plan_evaluation(model, x, y, n, attacks)
    return plan.seconds(), plan.describe()


def format_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
