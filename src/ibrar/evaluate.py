"""The robustness evaluation: every attack on the same fixed examples, the per-example worst case,
and checks for gradient masking, so that a robustness number means what it says.

``evaluate(model, images, labels, ["pgd10", "cw", "autoattack"])`` is the whole API a user needs.
Each attack runs once on the clean-correct examples, so its accuracy is the one it achieves alone;
the worst case is then the per-example AND over the attacks, exact at no extra cost. A worst case
belongs to one threat model: the reported ``worst_case`` is taken over the L-inf attacks at the
evaluation's ``eps`` only; unbounded L2 attacks such as CW get their own (``worst_cases``).
``autoattack`` is the reference implementation (pyautoattack), run on all ``n`` examples as the
reference runs them; its per-example result enters the worst case like any other attack's.
``worst_case_only=True`` runs a cascade instead (each attack only on the examples still robust,
as AutoAttack does), which is faster but gives no per-attack accuracy.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ibrar.attacks import CW, NIFGSM, PGD, Attack, ReferenceAutoAttack, build_attack, parse_attack_name
from ibrar.attacks.reference_autoattack import DEFAULT_BATCH_SIZE as AUTOATTACK_BATCH_SIZE
from ibrar.attacks.reference_autoattack import STAGE_LABELS
from ibrar.eval_estimate import CURVE_PREFIX
from ibrar.eval_progress import EvalProgress, as_progress
from ibrar.masking import OVERSTATES, overstates
from ibrar.modes import eval_mode

# Attacks that ascend a loss: their adversarial loss should exceed the clean one.
_ASCENT_ATTACKS = ("FGSM", "PGD", "NIFGSM", "APGD", "APGDT", "AdaptivePGD")
_BLACK_BOX = ("Square",)
# PGD-type attacks, held to AutoAttack: FGSM (one step) and NI-FGSM (momentum built to transfer, whose accuracy
# can even rise with its steps) are weaker by design, so their gap to AutoAttack is not a sign of masking.
_PGD_TYPE = ("PGD", "APGD", "APGDT", "AdaptivePGD")
DEFAULT_BATCH_SIZE = 256  # ibrar's own attacks; the reference AutoAttack keeps its own default (250)
AnyAttack = Attack | ReferenceAutoAttack


@dataclass
class AttackResult:
    """One attack's outcome on the evaluated examples (accuracies over all ``n`` of them)."""

    name: str
    params: dict[str, Any]
    accuracy: float | None  # None in a cascade (worst_case_only), where it is not the attack's alone
    n_robust: int
    n_attacked: int
    seconds: float
    attack_class: str = ""
    loss_clean: float | None = None  # mean CE on the attacked examples, before and after the attack
    loss_adv: float | None = None
    norm: str = "linf"  # the threat model: "linf" with eps, or "l2" (unbounded here: eps None)
    eps: float | None = None
    median_l2: float | None = None  # L2 attacks: median L2 size of the successful perturbations


@dataclass
class WorstCase:
    """The per-example worst case over the attacks of one threat model."""

    norm: str
    eps: float | None
    attacks: list[str]
    accuracy: float

    def to_dict(self) -> dict[str, Any]:
        return {"norm": _NORM_LABELS[self.norm], "eps": self.eps, "attacks": list(self.attacks),
                "accuracy": self.accuracy}


_NORM_LABELS = {"linf": "Linf", "l2": "L2"}


@dataclass
class EvalReport:
    """Clean and robust accuracies on ``n`` examples chosen with ``seed``."""

    n: int
    seed: int
    clean: float
    worst_case: float  # over the L-inf attacks at ``eps`` (the evaluation's threat model)
    attacks: list[AttackResult] = field(default_factory=list)
    worst_case_only: bool = False
    seconds: float = 0.0
    eps: float = 8 / 255
    worst_cases: list[WorstCase] = field(default_factory=list)  # one per threat model, ``worst_case``'s first
    autoattack: dict[str, Any] | None = None  # the reference AutoAttack's per-stage results, when run
    indices: Tensor | None = field(default=None, repr=False)
    robust: dict[str, Tensor] = field(default_factory=dict, repr=False)  # per-example masks

    def result(self, name: str) -> AttackResult:
        for r in self.attacks:
            if r.name == name:
                return r
        raise ValueError(f"name must be one of {[r.name for r in self.attacks]}, got {name!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no tensors)."""
        out = {
            "n": self.n, "seed": self.seed, "clean": self.clean, "eps": self.eps, "worst_case": self.worst_case,
            "worst_cases": [w.to_dict() for w in self.worst_cases],
            "worst_case_only": self.worst_case_only, "seconds": self.seconds,
            "attacks": [
                {"name": r.name, "attack": r.attack_class, "params": _jsonable(r.params),
                 "norm": _NORM_LABELS[r.norm], "eps": r.eps,
                 "accuracy": r.accuracy, "n_robust": r.n_robust, "n_attacked": r.n_attacked,
                 "seconds": r.seconds, "loss_clean": r.loss_clean, "loss_adv": r.loss_adv,
                 **({"median_l2": r.median_l2} if r.norm == "l2" else {})}
                for r in self.attacks
            ],
        }
        if self.autoattack is not None:
            out["autoattack"] = self.autoattack
        return out


def _jsonable(params: Mapping[str, Any]) -> dict[str, Any]:
    plain = (int, float, str, bool, list, dict, type(None))
    return {k: v if isinstance(v, plain) else repr(v) for k, v in params.items()}


def select_subset(num: int, n: int | None, seed: int) -> Tensor:
    """Indices of the evaluated examples: all of them, or a fixed seeded subset of ``n`` (sorted)."""
    if n is None:
        return torch.arange(num)
    if not isinstance(n, int) or n < 1 or n > num:
        raise ValueError(f"n must be an int in [1, {num}] (the number of examples) or None, got {n!r}")
    return torch.randperm(num, generator=torch.Generator().manual_seed(seed))[:n].sort().values


def evaluation_examples(images: Tensor, labels: Tensor, n: int | None, seed: int, device: torch.device | str,
                        dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor, Tensor]:
    """The seeded subset `evaluate` attacks: its indices, and its images (in [0, 1], as ``dtype``: the model's)
    and labels on ``device``, exactly the tensors the attacks get (an estimate that reads a resumed AutoAttack's
    progress fingerprints them)."""
    _check(images, labels)
    indices = select_subset(len(images), n, seed)
    x = images[indices]  # indexed before the conversion: the same values, without a float copy of the whole set
    x = x.float() / 255 if x.dtype == torch.uint8 else x  # converted where the images are, as always
    return indices, x.to(dtype).to(device), labels[indices].long().to(device)


def model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype the model's weights are in (float32 for a model without floating-point parameters)."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def _check(images: Tensor, labels: Tensor) -> None:
    if not isinstance(images, Tensor) or images.dim() < 2:
        raise ValueError(f"images must be a tensor shaped (N, C, H, W), got {type(images).__name__}")
    if not isinstance(labels, Tensor) or labels.dim() != 1 or len(labels) != len(images):
        raise ValueError(f"labels must be a 1-d tensor with one label per image ({len(images)}), got "
                         f"{tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__}")
    if len(images) == 0:
        raise ValueError("images must hold at least one example, got an empty tensor")


def share(flags: Tensor) -> float:
    """The fraction of True flags, exact as a Python float (k / n; a float32 mean stores 36/1000 as 0.035999998,
    and a table's rounding then goes the wrong way at a half)."""
    return int(flags.sum()) / flags.numel()


def _model_device(model: nn.Module) -> torch.device:
    param = next(iter(model.parameters()), None)
    return param.device if param is not None else torch.device("cpu")


@torch.no_grad()
def _predict(model: nn.Module, x: Tensor, batch_size: int) -> Tensor:
    return torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def _build(attacks: Mapping[str, AnyAttack] | Sequence[str], model: nn.Module, eps: float,
           attack_params: Mapping[str, Any], seed: int) -> dict[str, AnyAttack]:
    if isinstance(attacks, Mapping):
        for name, attack in attacks.items():
            if not isinstance(attack, (Attack, ReferenceAutoAttack)):
                raise ValueError(f"attacks[{name!r}] must be an ibrar Attack or ReferenceAutoAttack, got "
                                 f"{type(attack).__name__}")
        return dict(attacks)
    if isinstance(attacks, str):
        raise ValueError(f"attacks must be a list of names or a dict of attacks, got the string {attacks!r}")
    built = {}
    for name in attacks:
        params = dict(attack_params)
        if parse_attack_name(name)[0] == "autoattack":
            params.setdefault("seed", seed)  # the reference runs with the evaluation's seed
        built[name] = build_attack(name, model, eps=eps, **params)
    return built


def _same_threat(threat: tuple[str, float | None], norm: str, eps: float | None) -> bool:
    if threat[0] != norm:
        return False
    return threat[1] is eps is None or (threat[1] is not None and eps is not None
                                        and abs(threat[1] - eps) < 1e-9)


def _worst_cases(attacks: list[AttackResult], robust: Mapping[str, Tensor], correct: Tensor,
                 eps: float) -> list[WorstCase]:
    """The per-example AND within each threat model; the L-inf ball of radius ``eps`` comes first."""
    threats: list[tuple[str, float | None]] = [("linf", float(eps))]
    for r in attacks:
        if not any(_same_threat(t, r.norm, r.eps) for t in threats):
            threats.append((r.norm, r.eps))
    out = []
    for norm, bound in threats:
        names = [r.name for r in attacks if _same_threat((r.norm, r.eps), norm, bound)]
        worst = correct.cpu().clone()
        for name in names:
            worst &= robust[name]
        out.append(WorstCase(norm, bound, names, share(worst)))
    return out


def _run_attack(attack: Attack, model: nn.Module, x: Tensor, y: Tensor, batch_size: int,
                seed: int, progress: EvalProgress | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Attack in batches; returns per-example (robust, clean CE, adversarial CE, L2 size of the perturbation)."""
    if len(x) == 0:  # nothing classified correctly: nothing to attack
        empty = torch.zeros(0, device=x.device)
        return empty.bool(), empty, empty, empty
    robust, loss_clean, loss_adv, l2 = [], [], [], []
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        torch.manual_seed(seed)
        for i in range(0, len(x), batch_size):
            xb, yb = x[i:i + batch_size], y[i:i + batch_size]
            x_adv = attack(xb, yb)
            with torch.no_grad():
                logits_adv, logits = model(x_adv), model(xb)
            robust.append(logits_adv.argmax(1) == yb)
            if progress is not None:
                progress.advance(len(yb), int((~robust[-1]).sum()))
            loss_clean.append(F.cross_entropy(logits, yb, reduction="none"))
            loss_adv.append(F.cross_entropy(logits_adv, yb, reduction="none"))
            l2.append((x_adv - xb).flatten(1).norm(dim=1))
    return torch.cat(robust), torch.cat(loss_clean), torch.cat(loss_adv), torch.cat(l2)


def evaluate(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    attacks: Mapping[str, AnyAttack] | Sequence[str],
    batch_size: int | None = None,
    device: torch.device | str | None = None,
    seed: int = 0,
    n: int | None = None,
    worst_case_only: bool = False,
    eps: float = 8 / 255,
    attack_params: Mapping[str, Any] | None = None,
    state_dir: str | Path | None = None,
    progress: EvalProgress | bool | None = None,
) -> EvalReport:
    """Clean accuracy, accuracy under each attack and the per-example worst case, on the same examples.

    ``attacks`` is a dict of built attacks or a list of names for :func:`ibrar.attacks.build_attack`
    (built with ``eps`` and ``attack_params``). ``images`` may be float in [0, 1] or uint8.
    Examples misclassified when clean count as broken and are never attacked by ibrar's attacks; the
    reference AutoAttack runs on all ``n`` examples in order, as the reference does, with its own batch
    size (250) unless ``batch_size`` is given, and resumes from ``state_dir`` when given. ``worst_case``
    is over the L-inf attacks at ``eps``. The model is put in eval mode and restored afterwards.
    ``progress=True`` shows one bar per attack and per AutoAttack stage on stderr (an
    `ibrar.eval_progress.EvalProgress` for one line per piece, or a time left from a plan).
    """
    progress = as_progress(progress)
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be an int >= 1 or None, got {batch_size!r}")
    device = torch.device(device) if device is not None else _model_device(model)
    indices, x, y = evaluation_examples(images, labels, n, seed, device, model_dtype(model))
    built = _build(attacks, model, eps, attack_params or {}, seed)

    start = time.perf_counter()
    with eval_mode(model):
        correct = _predict(model, x, batch_size or DEFAULT_BATCH_SIZE).argmax(1) == y
        still_robust: dict[tuple[str, float | None], Tensor] = {}  # per threat model, for the cascade
        report = EvalReport(n=len(y), seed=seed, clean=share(correct), worst_case=0.0,
                            worst_case_only=worst_case_only, indices=indices, eps=float(eps))
        for name, attack in built.items():
            norm, bound = attack.threat_model
            if isinstance(attack, ReferenceAutoAttack):
                result = attack.run(x, y, batch_size=batch_size or AUTOATTACK_BATCH_SIZE, state_dir=state_dir,
                                    progress=progress)
                robust = result.robust.to(device)
                report.autoattack = result.to_dict()
                report.robust[name] = robust.cpu()
                report.attacks.append(AttackResult(
                    name=name, params=result.params, attack_class=type(attack).__name__,
                    accuracy=share(robust), n_robust=int(robust.sum()), n_attacked=len(y),
                    seconds=result.seconds, norm=norm, eps=bound))
                continue
            key = (norm, None if bound is None else round(bound, 9))
            todo = (still_robust.setdefault(key, correct.clone()) if worst_case_only else correct)
            todo = todo.nonzero().squeeze(1)
            t0 = time.perf_counter()
            if progress is not None:
                progress.start(name, len(todo))
            robust_sub, loss_clean, loss_adv, l2 = _run_attack(attack, model, x[todo], y[todo],
                                                               batch_size or DEFAULT_BATCH_SIZE, seed, progress)
            seconds = time.perf_counter() - t0
            if progress is not None:
                progress.finish(int(robust_sub.sum()))
            robust = torch.zeros_like(correct)
            robust[todo] = robust_sub
            if worst_case_only:
                still_robust[key] &= robust
            report.robust[name] = robust.cpu()
            broken = l2[~robust_sub]
            report.attacks.append(AttackResult(
                name=name, params=attack.params(), attack_class=type(attack).__name__,
                accuracy=None if worst_case_only else share(robust),
                n_robust=int(robust.sum()), n_attacked=len(todo), seconds=seconds,
                loss_clean=loss_clean.mean().item() if len(todo) else None,
                loss_adv=loss_adv.mean().item() if len(todo) else None,
                norm=norm, eps=bound,
                median_l2=broken.median().item() if norm == "l2" and len(broken) else None,
            ))
        report.worst_cases = _worst_cases(report.attacks, report.robust, correct, eps)
        report.worst_case = report.worst_cases[0].accuracy
        report.seconds = time.perf_counter() - start
    return report


_FAMILIES = {
    "pgd": lambda model, eps, s: PGD(model, eps=eps, steps=s),
    "cw": lambda model, eps, s: CW(model, steps=s),
    "nifgsm": lambda model, eps, s: NIFGSM(model, eps=eps, steps=s),
}


def steps_curve(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    attack_family: str,
    steps: Sequence[int] = (1, 5, 10, 20, 50),
    eps: float = 8 / 255,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    seed: int = 0,
    n: int | None = None,
    progress: EvalProgress | bool | None = None,
) -> dict[int, float]:
    """Robust accuracy against the number of attack steps (the paper's Figure 2)."""
    if attack_family not in _FAMILIES:
        raise ValueError(f"attack_family must be one of {sorted(_FAMILIES)}, got {attack_family!r}")
    if not steps or any(not isinstance(s, int) or s < 1 for s in steps):
        raise ValueError(f"steps must be a non-empty list of ints >= 1, got {steps!r}")
    attacks = {f"{attack_family}{s}": _FAMILIES[attack_family](model, eps, s) for s in steps}
    progress = as_progress(progress)
    with progress.section(CURVE_PREFIX) if progress is not None else contextlib.nullcontext():
        report = evaluate(model, images, labels, attacks, batch_size=batch_size, device=device, seed=seed, n=n,
                          progress=progress)
    return {s: report.result(f"{attack_family}{s}").accuracy for s in steps}


def masking_warnings(
    report: EvalReport,
    model: nn.Module | None = None,
    images: Tensor | None = None,
    labels: Tensor | None = None,
    curve: Mapping[int, float] | None = None,
    large_eps: float | None = None,
    tolerance: float = 0.02,
    batch_size: int = 256,
    progress: EvalProgress | bool | None = None,
) -> list[str]:
    """Signs of gradient masking, each a sentence with the figures; an empty list when none is seen.

    - a black-box attack (Square) beats every white-box attack of its threat model, or, inside the
      reference AutoAttack, its Square stage breaks more than ``tolerance`` of the examples that
      APGD-CE, APGD-T and FAB-T left robust;
    - the reference AutoAttack breaks more than half of the examples that a PGD-type attack of its threat model
      left robust (by accuracy: AutoAttack's is below half of that attack's), by more than ``tolerance``: that
      attack's number overstates robustness (a few points between PGD and AutoAttack are usual; most of PGD's
      survivors falling is not);
    - accuracy rises with the number of steps in ``curve`` (from :func:`steps_curve`);
    - an ascent attack whose mean loss did not rise (``loss_adv <= loss_clean``);
    - with ``large_eps`` (e.g. 0.5) and ``model``/``images``/``labels`` (the same ones given to
      :func:`evaluate`): PGD-20 at that radius leaves more than ``tolerance`` accuracy, which a
      model without masking cannot do.
    """
    warnings: list[str] = []
    for b in report.attacks:
        if b.attack_class not in _BLACK_BOX or b.accuracy is None:
            continue
        white = {r.name: r.accuracy for r in report.attacks if r.accuracy is not None
                 and r.attack_class not in (*_BLACK_BOX, "ReferenceAutoAttack") and (r.norm, r.eps) == (b.norm, b.eps)}
        if white and b.accuracy < min(white.values()) - tolerance:
            best = min(white, key=white.get)
            warnings.append(f"black-box {b.name} ({b.accuracy:.1%}) beats every white-box attack (best: {best} "
                            f"{white[best]:.1%}): gradients are likely masked")
    if report.autoattack is not None:
        stages = report.autoattack["stages"]
        white_box = stages["fab-t"]  # robust after all three gradient-based stages
        if stages["square"] < white_box - tolerance:
            warnings.append(f"AutoAttack's black-box Square stage lowered robust accuracy from {white_box:.1%} "
                            f"(after APGD-CE, APGD-T, FAB-T) to {stages['square']:.1%}: gradients are "
                            "likely masked")
        warnings += _overstated_by(report.attacks, report.autoattack, tolerance)
    if curve:
        ordered = sorted(curve.items())
        for (s0, a0), (s1, a1) in zip(ordered, ordered[1:], strict=False):
            if a1 > a0 + tolerance:
                warnings.append(f"accuracy rises with more steps ({s0} steps: {a0:.1%}, {s1} steps: "
                                f"{a1:.1%}): the attack is not converging")
        (s_first, a_first), (s_last, a_last) = ordered[0], ordered[-1]
        if len(ordered) > 1 and a_first > tolerance and a_last >= a_first:
            warnings.append(f"accuracy does not fall as steps grow ({s_first} steps: {a_first:.1%}, "
                            f"{s_last} steps: {a_last:.1%})")
    for r in report.attacks:
        if r.attack_class in _ASCENT_ATTACKS and r.loss_clean is not None and r.loss_adv is not None \
                and r.loss_adv <= r.loss_clean:
            warnings.append(f"{r.name}: the loss did not rise (clean {r.loss_clean:.4f}, adversarial "
                            f"{r.loss_adv:.4f}): its gradients are uninformative")
    if large_eps is not None:
        if model is None or images is None or labels is None:
            raise ValueError("model, images and labels are needed for the large_eps check, got None")
        attack = PGD(model, eps=large_eps, alpha=large_eps / 8, steps=20)
        subset = report.n if report.n < len(images) else None  # the same seeded subset as the report's
        name = f"pgd20 at eps {large_eps:g}"
        progress = as_progress(progress)
        with progress.section("masking check: ") if progress is not None else contextlib.nullcontext():
            big = evaluate(model, images, labels, {name: attack}, batch_size=batch_size, seed=report.seed,
                           n=subset, progress=progress)
        acc = big.result(name).accuracy or 0.0
        if acc > tolerance:
            warnings.append(f"PGD-20 at eps={large_eps:.3g} leaves {acc:.1%} accuracy (expected ~0%): "
                            "gradients are likely masked")
    return warnings


def _overstated_by(attacks: Sequence[AttackResult], autoattack: Mapping[str, Any], tolerance: float) -> list[str]:
    """The PGD-type attacks most of whose robust examples the reference AutoAttack breaks."""
    found = autoattack.get("robust_accuracy")
    if found is None:
        return []
    threat = (str(autoattack["norm"]).lower(), autoattack.get("eps"))
    out = []
    for r in attacks:
        if r.attack_class not in _PGD_TYPE or r.accuracy is None or not _same_threat(threat, r.norm, r.eps):
            continue
        if overstates(r.accuracy, found, tolerance):
            gap = r.accuracy - found
            out.append(f"AutoAttack breaks {gap / r.accuracy:.0%} of the examples {r.name} leaves robust "
                       f"({r.name} {r.accuracy:.1%}, AutoAttack {found:.1%}): {r.name} {OVERSTATES}, a "
                       "sign of gradient masking; report AutoAttack's number")
    return out


def threat_label(norm: str, eps: float | None) -> str:
    """``"Linf 8/255"``, ``"Linf 0.1"``, ``"L2"`` (unbounded)."""
    if eps is None:
        return _NORM_LABELS[norm]
    k = eps * 255
    return f"{_NORM_LABELS[norm]} {round(k)}/255" if abs(k - round(k)) < 1e-6 else f"{_NORM_LABELS[norm]} {eps:.4g}"


def format_table(report: EvalReport) -> str:
    """A plain-text table of the report for the terminal: one worst case per threat model."""
    rows = [("clean", "", f"{report.clean:.2%}", "", "", "")]
    for r in report.attacks:
        acc = "cascade" if r.accuracy is None else f"{r.accuracy:.2%}"
        note = "" if r.loss_clean is None else f"CE {r.loss_clean:.3f} -> {r.loss_adv:.3f}"
        if r.norm == "l2":
            note = "median L2 of successes: " + ("-" if r.median_l2 is None else f"{r.median_l2:.3f}")
        rows.append((r.name, threat_label(r.norm, r.eps), acc, str(r.n_robust), f"{r.seconds:.1f}s", note))
    for w in report.worst_cases:
        note = "over " + (", ".join(w.attacks) if w.attacks else "no attack (= clean)")
        rows.append(("worst case", threat_label(w.norm, w.eps), f"{w.accuracy:.2%}",
                     str(round(w.accuracy * report.n)), "", note))
    header = ("attack", "threat model", "accuracy", "robust", "time", "")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [f"n = {report.n} examples, seed = {report.seed}"]
    for row in [header, *rows]:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    if report.autoattack is not None:
        lines.append(format_autoattack(report.autoattack))
    return "\n".join(lines)


def format_autoattack(block: Mapping[str, Any]) -> str:
    """One line per reference AutoAttack evaluation: its parameters and the robust accuracy after each stage."""
    budget = "" if block["standard_budget"] else f", reduced budget {block['budget']}"
    stages = " -> ".join(f"{STAGE_LABELS[k]} {v:.2%}" for k, v in block["stages"].items())
    lines = [f"autoattack = {block['implementation']} {block['package_version']}, {block['version']} version"
             f"{budget}, {threat_label('linf', block['eps'])}, seed {block['seed']}, "
             f"{block['n_target_classes']} target classes, batch size {block['batch_size']}: {stages}"]
    lines += [f"WARNING (AutoAttack's own check): {w}" for w in block["warnings"]]
    return "\n".join(lines)
