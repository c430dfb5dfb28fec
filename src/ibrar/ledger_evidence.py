"""The claims ledger's evidence: run folders read from results/ (any seed, any scale, finished or not) and the
rules that turn a measured effect into a verdict. `ibrar.ledger` states the claims and writes the ledger.

The rules, in words (the ledger prints them from `RULES`):

- An effect (treatment minus control, in accuracy points) is *there* when its mean over the seeds has the paper's
  sign and reaches the threshold, and every seed that enters the mean has the paper's sign. The threshold is
  `MARGIN_PP` points (Table 3's rule for calling a layer robust, the paper's "obviously higher"), or half the
  paper's own effect where that is smaller, so that a small claimed effect is not held to a bar above its size.
- A comparison *reproduces* when the effect is there under the paper's attack and under AutoAttack; it *appears
  under the paper's attacks only* when AutoAttack removes it; it *does not reproduce* when the paper's attack
  does not show it; it is *not yet decided* when a run it needs is missing or unfinished.
- A claim of several comparisons takes the weakest of them; a scale with several settings (widths, training
  lengths, optimizers) takes the strongest of its settings, each shown with its own verdict.
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ibrar.evaluation_record import Evaluation
from ibrar.experiments.table3 import MARGIN_PP
from ibrar.rounding import fixed
from ibrar.rounding import signed as signed_text
from ibrar.run_folder import RunFolder

REPRODUCES = "reproduces"
PAPER_ONLY = "appears under the paper's attacks only, not under AutoAttack"
UNDECIDED = "not yet decided"
DOES_NOT = "does not reproduce"
NOT_RUN = "not run"
# weakest to strongest: a claim's comparisons take the minimum, a scale's settings the maximum
ORDER = (NOT_RUN, DOES_NOT, PAPER_ONLY, UNDECIDED, REPRODUCES)

RULES = (
    f"An effect (with IB-RAR minus without, in accuracy points) is there when its mean over the seeds has the "
    f"paper's sign and reaches {MARGIN_PP:g} points (Table 3's rule for a robust layer) or half the paper's own "
    "effect where that is smaller, and every seed in the mean has the paper's sign. A comparison **reproduces** "
    "when the effect is there under the paper's attack and under the reference AutoAttack, **appears under the "
    "paper's attacks only** when AutoAttack removes it, **does not reproduce** when the paper's attack does not "
    "show it, and is **not yet decided** when a run it needs is missing or unfinished; **not run** means no run "
    "of it exists. A claim of several comparisons takes the weakest; a scale with several settings takes the "
    "strongest, each setting listed with its own verdict."
)


@dataclass(frozen=True)
class Verdict:
    kind: str
    reasons: tuple[str, ...] = ()

    def text(self) -> str:
        return f"{self.kind}: {'; '.join(self.reasons)}" if self.reasons else self.kind


def weakest(verdicts: Sequence[Verdict]) -> Verdict:
    """All comparisons must hold; a comparison not run where others ran leaves the claim undecided."""
    if not verdicts or all(v.kind == NOT_RUN for v in verdicts):
        return Verdict(NOT_RUN, tuple(r for v in verdicts for r in v.reasons))
    ranked = [Verdict(UNDECIDED, v.reasons) if v.kind == NOT_RUN else v for v in verdicts]
    low = min(ORDER.index(v.kind) for v in ranked)
    return Verdict(ORDER[low], tuple(r for v in ranked if ORDER.index(v.kind) == low for r in v.reasons))


def strongest(verdicts: Sequence[Verdict]) -> Verdict:
    """The settings' best verdict, with the reasons of every setting that holds it (as `weakest` keeps all of its
    lowest ones): the first alone would hide what another setting still lacks."""
    if not verdicts:
        return Verdict(NOT_RUN)
    high = max(ORDER.index(v.kind) for v in verdicts)
    return Verdict(ORDER[high], tuple(dict.fromkeys(r for v in verdicts if ORDER.index(v.kind) == high
                                                    for r in v.reasons)))


def threshold(paper_effect: float | None) -> float:
    return MARGIN_PP if paper_effect is None else min(MARGIN_PP, abs(paper_effect) / 2)


# ---- run folders -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """A run folder as the ledger needs it: its config, and its evaluation if any (eval.json; else the paper's
    attacks on the whole test set alone, eval-full.json, from a GPU lease that ended before AutoAttack ran)."""

    path: Path
    config: dict[str, Any]
    result: Evaluation | None
    complete: bool  # eval.json
    epochs_done: int

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", 0))

    @property
    def rank(self) -> int:
        return 2 if self.complete else 1 if self.result is not None else 0

    def value(self, key: str) -> float | None:
        return None if self.result is None else self.result.metric(key)

    def status(self) -> str:
        epochs = (self.config.get("train") or {}).get("epochs")
        if self.result is None:
            return f"trained {self.epochs_done} of {epochs} epochs, not evaluated"
        if not self.complete:
            return "evaluated with the paper's attacks only, AutoAttack not run"
        return "evaluated"


def read_run(path: Path) -> Run | None:
    folder = RunFolder(path)
    if not folder.config_file.is_file():
        return None
    complete = folder.has_evaluation()
    result = folder.evaluation() if complete else folder.partial_evaluation()
    metrics = folder.metrics()
    return Run(path, folder.config_dict(), result, complete, int(metrics[-1].get("epoch", 0)) if metrics else 0)


def seed_runs(folder: Path, group: str, variant: str = "") -> dict[int, Run]:
    """The runs of one row of an experiment folder by seed: `<group>` and `<group>-seed<k>` (`ibrar reproduce
    --seeds`, or seeds added later beside a seed-0 run without suffix), or those of a variant
    (`<group><variant>[-seed<k>]`, `ibrar.run_names`); the seed is the one its config trained."""
    pattern = re.compile(rf"{re.escape(group)}{re.escape(variant)}(-seed\d+)?")
    found: dict[int, Run] = {}
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if path.is_dir() and pattern.fullmatch(path.name) and (run := read_run(path)) is not None:
            if run.seed not in found or run.rank > found[run.seed].rank:
                found[run.seed] = run
    return found


# What makes two runs of different rows comparable: the training problem, not the implementation (AMP,
# channels_last and compile may differ between the rows a GPU lease trained). The profile too: the authors'
# code's (`official`) masks and measures HSIC by its own rules, which the rows' ib and mask sections differ in
# anyway, so the profile stands for those rules.
SETTING_FIELDS = {"model": ("name", "width"), "data": ("name", "train_subset", "batch_size", "augment"),
                  "optim": None, "method": None, "train": ("epochs",)}


def setting_key(config: dict[str, Any]) -> str:
    chosen: dict[str, Any] = {"profile": config.get("profile", "paper")}
    for section, keys in SETTING_FIELDS.items():
        values = config.get(section) or {}
        chosen[section] = values if keys is None else {k: values.get(k) for k in keys}
    return json.dumps(chosen, sort_keys=True)


def setting_label(config: dict[str, Any]) -> str:
    """'width 0.25, 10,000 training images, 10 epochs, SGD momentum 0.9, no weight decay'."""
    model, data, optim = config.get("model") or {}, config.get("data") or {}, config.get("optim") or {}
    images, epochs = data.get("train_subset"), (config.get("train") or {}).get("epochs")
    decay = optim.get("weight_decay") or 0
    profile = config.get("profile", "paper")
    return (f"width {model.get('width', 1):g}, {'all' if images is None else f'{images:,}'} training images, "
            f"{epochs} epoch{'' if epochs == 1 else 's'}, SGD momentum {optim.get('momentum', 0):g}, "
            + (f"weight decay {decay:g}" if decay else "no weight decay")
            + ("" if profile == "paper" else f", profile {profile}"))


@dataclass
class Setting:
    """The runs of one training setting, by row and seed (Table 4's rows at one width, length and optimizer)."""

    label: str
    rows: dict[str, dict[int, Run]] = field(default_factory=dict)

    def folders(self) -> list[Path]:
        return sorted({run.path.parent for seeds in self.rows.values() for run in seeds.values()})


def settings_of(folders: Iterable[Path], row_of: re.Pattern[str]) -> list[Setting]:
    """Group every run folder under `folders` whose config name matches `row_of` (group `row`) by setting, then
    row and seed; of two copies of one (setting, row, seed), the one evaluated furthest, else the first found.
    Settings come in order of width, training images and epochs (the paper's setting last)."""
    found: dict[str, Setting] = {}
    for folder in folders:
        for path in sorted(folder.iterdir()) if folder.is_dir() else []:
            run = read_run(path) if path.is_dir() else None
            match = row_of.search(str(run.config.get("name", ""))) if run is not None else None
            if run is None or match is None:
                continue
            setting = found.setdefault(setting_key(run.config), Setting(setting_label(run.config)))
            seeds = setting.rows.setdefault(match.group("row"), {})
            if run.seed not in seeds or run.rank > seeds[run.seed].rank:
                seeds[run.seed] = run

    def order(setting: Setting) -> tuple[float, float, float]:
        config = next(iter(next(iter(setting.rows.values())).values())).config
        images = (config.get("data") or {}).get("train_subset")
        return (float((config.get("model") or {}).get("width", 1)), float("inf") if images is None else images,
                float((config.get("train") or {}).get("epochs") or 0))

    return sorted(found.values(), key=order)


# ---- measured effects --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measure:
    """One quantity over seeds (or over method pairs), and why there is no value where there is none. `signs`
    are the values whose sign must agree with the paper's (every seed, where `values` are means over pairs);
    `absent`: the treatment has no run at all (the comparison was never made, rather than left unfinished)."""

    values: tuple[float, ...]
    missing: tuple[str, ...] = ()
    signs: tuple[float, ...] | None = None
    absent: bool = False

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    def there(self, bar: float) -> bool:
        return bool(self.values) and statistics.fmean(self.values) >= bar and self.signs_agree()

    def signs_agree(self) -> bool:
        return all(v > 0 for v in (self.values if self.signs is None else self.signs))

    def split_by_sign(self, bar: float, under: str) -> tuple[str, ...]:
        """Why an effect whose mean reaches the bar is not there: a seed with the opposite sign (else nothing)."""
        if self.values and statistics.fmean(self.values) >= bar and not self.signs_agree():
            return (f"the mean under {under} reaches the threshold ({bar:.1f}), but not every seed has the paper's "
                    "sign",)
        return ()

    def text(self, signed: bool = False, empty: str = "-") -> str:
        if not self.values:
            return empty
        head = signed_text(statistics.fmean(self.values)) if signed else fixed(statistics.fmean(self.values), 1)
        return head if len(self.values) == 1 else f"{head} ± {fixed(statistics.stdev(self.values), 1)}"


def side(runs: dict[int, Run], key: str, metric: Callable[[Run], float | None] | None = None) -> Measure:
    value = metric or (lambda run: run.value(key))
    return Measure(tuple(v for run in runs.values() if (v := value(run)) is not None))


def why_missing(name: str, runs: dict[int, Run], key: str) -> str:
    """Why the runs of one row give no value for `key`: no run, not (yet) evaluated, or not with this attack."""
    if not runs:
        return f"{name}: no run"
    run = max(runs.values(), key=lambda r: r.rank)
    if run.result is None:
        return f"{name}: {run.status()}"
    return f"{name}: {'AutoAttack' if key == 'autoattack' else key} not run"


def why_seed_missing(name: str, runs: dict[int, Run], seed: int, key: str) -> str:
    """`why_missing` for one seed of a row: 'row (6) seed 1: no run'."""
    return why_missing(f"{name} seed {seed}", {seed: runs[seed]} if seed in runs else {}, key)


def difference(treatment: dict[int, Run], control: dict[int, Run], key: str, names: tuple[str, str],
               metric: Callable[[Run], float | None] | None = None) -> Measure:
    """Treatment minus control, one value per seed that both ran and evaluated (with `key`, or `metric`, a
    function of a run, where given); `names` label the two rows in the reasons."""
    value = metric or (lambda run: run.value(key))
    missing = tuple(why_missing(name, runs, key) for name, runs in zip(names, (treatment, control), strict=True)
                    if all(value(run) is None for run in runs.values()))
    # a seed one row ran but that is not evaluated in both leaves the comparison open: judging the seeds left
    # would count a run as decided that is still missing or unfinished
    unfinished = tuple(why_seed_missing(name, runs, seed, key) for seed in sorted(set(treatment) | set(control))
                       for name, runs in zip(names, (treatment, control), strict=True)
                       if seed not in runs or value(runs[seed]) is None)
    if unfinished and not missing:
        return Measure((), unfinished, absent=not treatment)
    values = [a - b for seed in sorted(set(treatment) & set(control))
              if (a := value(treatment[seed])) is not None and (b := value(control[seed])) is not None]
    if not values and not missing:
        missing = (f"{names[0]} and {names[1]}: no seed evaluated in both",)
    return Measure(tuple(values), missing, absent=not treatment)


def gain_verdict(attack: Measure, autoattack: Measure | None, bar: float) -> Verdict:
    """The rule for one comparison (autoattack None: a quantity AutoAttack has no say on, e.g. clean accuracy)."""
    if not attack.values:
        reasons = tuple(dict.fromkeys((*attack.missing, *(autoattack.missing if autoattack else ()))))
        return Verdict(NOT_RUN if attack.absent else UNDECIDED, reasons)
    if not attack.there(bar):
        return Verdict(DOES_NOT, attack.split_by_sign(bar, "the paper's attack"))
    if autoattack is None:
        return Verdict(REPRODUCES)
    if not autoattack.values:
        return Verdict(UNDECIDED, autoattack.missing or ("AutoAttack not run",))
    if autoattack.there(bar):
        return Verdict(REPRODUCES)
    return Verdict(PAPER_ONLY, autoattack.split_by_sign(bar, "AutoAttack"))


def common_seeds(runs: Iterable[dict[int, Run]]) -> list[int]:
    """The seeds that every row of a comparison ran and evaluated (a run folder still training is no seed yet)."""
    sets = [{seed for seed, run in r.items() if run.result is not None} for r in runs]
    return sorted(set.intersection(*sets)) if sets and all(sets) else []


def seeds_text(seeds: Sequence[int]) -> str:
    """'1 seed (0)' or '2 seeds (0, 1)'."""
    if not seeds:
        return "no seed in common"
    return f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''} ({', '.join(str(s) for s in seeds)})"


def test_images(runs: Iterable[Run]) -> str:
    """'1,000 test images', or '10,000 test images (AutoAttack: 1,000)' where AutoAttack ran on a subset."""
    sizes, subsets = set(), set()
    for run in runs:
        if run.result is None:
            continue
        sizes.add(run.result.n)
        subsets |= {a.n if a.n is not None else run.result.n for a in run.result.attacks if a.name == "autoattack"}
    if not sizes:
        return "not evaluated"
    text = " or ".join(f"{n:,}" for n in sorted(sizes)) + " test images"
    extra = subsets - sizes
    return text + (f" (AutoAttack: {' or '.join(f'{n:,}' for n in sorted(subsets))})" if extra else "")
