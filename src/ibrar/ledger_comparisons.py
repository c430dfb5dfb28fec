"""What each experiment's runs say about a claim of the paper: one piece of evidence per setting (Table 4's rows
in every width, length and optimizer that ran them) or per method pair, each with its verdict by the rules of
`ibrar.ledger_evidence`. `ibrar.ledger` names the claims and writes the ledger.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ibrar.experiments import paper_numbers as paper
from ibrar.experiments import table3
from ibrar.experiments.base import get_scale, model_layers
from ibrar.experiments.table4 import ROWS as TABLE4_ROWS
from ibrar.ledger_evidence import (
    DOES_NOT,
    MARGIN_PP,
    NOT_RUN,
    PAPER_ONLY,
    REPRODUCES,
    UNDECIDED,
    Measure,
    Run,
    Verdict,
    common_seeds,
    difference,
    gain_verdict,
    seed_runs,
    seeds_text,
    settings_of,
    side,
    signed_text,
    strongest,
    test_images,
    threshold,
    weakest,
)
from ibrar.run_folder import RunFolder
from ibrar.run_names import variants

CONVERGENCE_EPOCHS = 2  # epochs earlier, at least: the monitor's 200 test images make one epoch noise
RULES = (
    f"Where the paper says a change adds nothing (row (5), the mask without the IB loss), that comparison "
    f"reproduces when the paper's attack shows less than {MARGIN_PP:g} points. Table 3's claim reproduces when, "
    f"with a network run for every layer, the layers its rule names (at least {MARGIN_PP:g} points above CE only) "
    f"are the paper's, under PGD-10 and under AutoAttack. Table 6's: with adversarial training the adaptive "
    f"attack PGD_AD (the lower of 10 and 100 steps) stays within {MARGIN_PP:g} points of PGD-10 and AutoAttack "
    f"leaves at least {MARGIN_PP:g}%; without, PGD_AD leaves IB-RAR above CE only by the rule above. "
    f"Convergence: the epoch at which the plain run first reaches its own final monitored clean accuracy, minus "
    f"the one at which its IB-RAR twin does, at least {CONVERGENCE_EPOCHS}, once both have finished training. The "
    "rules are `ibrar.ledger_evidence`'s and `ibrar.ledger_comparisons`'s; the paper's numbers come from "
    "`ibrar.experiments.paper_numbers`."
)
GPU_KIT = ("the GPU kit (`bench/gpu/`) trains it on a lease: `IBRAR_GPU_OPTIM=authors bash bench/gpu/run.sh table4` "
           "(all six rows), or `bash bench/gpu/run.sh table4-{row}`")
NO_KIT = ("the GPU kit (`bench/gpu/`) has no stage for it: its stages train Table 4's rows, Table 1's pairs and "
          "Figure 2's networks (Table 6's are among them)")
# the experiments (results folders less their scale) the GPU kit has a stage for, and how a lease runs them
KIT_STAGES = {"table1": "the GPU kit (`bench/gpu/`) trains its pairs on a lease: `bash bench/gpu/run.sh table1` "
                        "(PGD-AT), `table1 trades,trades-ibrar`, `table1 mart,mart-ibrar`",
              "fig2": "the GPU kit (`bench/gpu/`) trains its networks on a lease: `IBRAR_GPU_OPTIM=authors bash "
                      "bench/gpu/run.sh fig2`",
              "table6": "its networks are Table 4's rows (1) and (6) and Table 1's PGD-AT + IB-RAR run, which the GPU "
                        "kit (`bench/gpu/`) evaluates with its attacks too: `IBRAR_GPU_OPTIM=authors bash "
                        "bench/gpu/run.sh table4` (or `table4 1,6`), `bash bench/gpu/run.sh table1`"}


@dataclass(frozen=True)
class Line:
    """One piece of evidence: a setting (or a method pair) at one scale, what it measured, its verdict."""

    label: str
    measured: str
    verdict: Verdict
    seeds: int = 0


@dataclass(frozen=True)
class Evidence:
    """A claim at one scale: its verdict, the lines behind it, and what the verdict rests on where that is not
    everything the claim names (the setting that decided it; the pairs that ran)."""

    verdict: Verdict
    lines: tuple[Line, ...] = ()
    scope: str = ""


def _rel(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def _where(runs: Sequence[Run], root: Path) -> str:
    return ", ".join(f"`{_rel(f, root)}/`" for f in sorted({r.path.parent for r in runs}))


def _both(name: str, treatment: dict[int, Run], control: dict[int, Run], key: str, names: tuple[str, str],
          metric: Callable[[Run], float | None] | None = None) -> tuple[Measure, str]:
    """The difference under `key` (or `metric`) and its text: 'PGD-10 9.5 vs 0.0 (+9.5)'."""
    diff = difference(treatment, control, key, names, metric)
    both = set(treatment) & set(control)  # each side over the seeds the difference is taken over, where any
    sides = [side({k: r for k, r in runs.items() if k in both or not both}, key, metric).text(
        empty="no run" if not runs else "not evaluated") for runs in (treatment, control)]
    return diff, f"{name} {sides[0]} vs {sides[1]} ({diff.text(signed=True)})"


# ---- Table 4: rows against rows, in every setting that ran them -----------------------------------------

_TABLE4_ROW = re.compile(r"(?:^|-)table4-vgg16-(?P<row>\d)-")
_ROW_GROUPS = {row.split("-")[0]: f"vgg16-{row}" for row, _ in TABLE4_ROWS}  # "6" -> "vgg16-6-ibrar"
_ROW_LABELS = {"1": "row (1), CE only", "2": "row (2), IB loss", "5": "row (5), CE + mask", "6": "row (6), IB-RAR"}


def _table4_folders(results: Path, scale: str) -> list[Path]:
    """Table 4's runs at a scale, finished or not (`table4-paper*`: the GPU kit's folders, an optimizer suffix or
    `-partial` included), and the scale study's, which are Table 4's rows in other settings."""
    return [*sorted(results.glob(f"table4-{scale}*")), *sorted(results.glob(f"scale-{scale}*"))]


def table4_evidence(results: Path, root: Path, scale: str, parts: Sequence[tuple[str, str, bool]]) -> Evidence:
    """`parts`: (treatment row, control row, whether the paper claims a gain (else: no gain)); a setting that ran
    both rows of a part (finished or not) is judged on every part, and a part whose rows it lacks leaves it
    undecided (unless another part already fails): the claim needs all its comparisons."""
    settings = settings_of(_table4_folders(results, scale), _TABLE4_ROW)
    lines = []
    for setting in settings:
        verdicts, texts, runs, counts, lacking = [], [], [], [], []
        for treat, control, gain in parts:
            if treat not in setting.rows or control not in setting.rows:
                absent = " and ".join(row_name(r) for r in (treat, control) if r not in setting.rows)
                lacking.append(f"{row_name(treat)} − {row_name(control)}: {absent} not run in this setting")
                continue
            t, c = setting.rows[treat], setting.rows[control]
            runs += [*t.values(), *c.values()]
            names = (_ROW_LABELS[treat], _ROW_LABELS[control])
            pgd, pgd_text = _both("PGD-10", t, c, "pgd10", names)
            aa, aa_text = _both("AutoAttack", t, c, "autoattack", names)
            # where the paper says a row adds nothing, it reproduces when the paper's attack shows no gain
            verdicts.append(gain_verdict(pgd, aa, threshold(paper_pgd(treat) - paper_pgd(control))) if gain
                            else no_gain_verdict(pgd))
            seeds = common_seeds([t, c])
            counts.append(len(seeds))
            texts.append(f"{row_name(treat)} − {row_name(control)} ({seeds_text(seeds)}): {pgd_text}; {aa_text}")
        if verdicts:
            partial = "; partial: not every run finished" if any(not r.complete for r in runs) else ""
            verdicts += [Verdict(NOT_RUN, (why,)) for why in lacking]  # weakest() reads these as undecided
            lines.append(Line(f"{setting.label} ({_where(runs, root)}; {test_images(runs)}{partial})",
                              "; ".join([*texts, *lacking]), weakest(verdicts), min(counts)))
    if not lines:
        ran = {row for setting in settings for row in setting.rows}
        missing = sorted({r for p in parts for r in p[:2]} - ran)
        if not missing:
            return Evidence(Verdict(NOT_RUN, (f"no setting at {scale} scale ran both rows of a comparison",)))
        why = f"no run of {' or '.join(row_name(r) for r in missing)} at {scale} scale"
        if scale == "paper":
            why += "; " + GPU_KIT.format(row=missing[0]) + "".join(f", `table4-{r}`" for r in missing[1:])
        return Evidence(Verdict(NOT_RUN, (why,)))
    best = strongest([line.verdict for line in lines])
    if len(lines) == 1:
        return Evidence(best, tuple(lines))
    if all(line.verdict.kind == best.kind for line in lines):
        return Evidence(best, tuple(lines), f"in all {len(lines)} settings")
    # every setting that holds the verdict: the first alone would hide the others
    decided_by = " and ".join(line.label.split(" (")[0] for line in lines if line.verdict.kind == best.kind)
    return Evidence(best, tuple(lines), f"in {decided_by}")


def row_name(row: str) -> str:
    return f"row ({row})"


def no_gain_verdict(attack: Measure) -> Verdict:
    if not attack.values:
        return Verdict(NOT_RUN if attack.absent else UNDECIDED, attack.missing)
    return Verdict(REPRODUCES if (attack.mean or 0) < MARGIN_PP else DOES_NOT)


# ---- the other experiments: fixed run names in results/<experiment>-<scale>/ -----------------------------


def _pair_lines(folder: Path, root: Path, pairs: Sequence[tuple[str, str, str]],
                judge: Callable[[dict[int, Run], dict[int, Run], str], tuple[Verdict, str]],
                variant: str = "") -> list[Line]:
    """One line per (label, treatment group, control group) whose both rows ran; 'not run' lines for the rest.
    `variant`: the runs of the GPU kit's folders of that name variant (`ibrar.run_names`)."""
    lines = []
    for label, treat, control in pairs:
        t, c = seed_runs(folder, treat, variant), seed_runs(folder, control, variant)
        if not t or not c:
            missing = " and ".join(f"`{g}`" for g, runs in ((treat, t), (control, c)) if not runs)
            lines.append(Line(label, f"{missing} not run at this scale yet (no run in `{_rel(folder, root)}/`)",
                              Verdict(NOT_RUN)))
            continue
        verdict, text = judge(t, c, label)
        seeds = common_seeds([t, c])
        runs = [*t.values(), *c.values()]
        kit = f", run folders `<run>{variant}`" if variant else ""
        lines.append(Line(f"{label} (`{_rel(folder, root)}/`{kit}; {seeds_text(seeds)}; {test_images(runs)})", text,
                          verdict, len(seeds)))
    return lines


def _conjunction(lines: Sequence[Line], folder: Path, root: Path, scale: str, every: bool = True) -> Evidence:
    """The weakest of the lines that ran. `every`: the claim needs each line (a line not run where others ran
    leaves it undecided, unless another fails); else the lines are alternative evidence for one claim (the
    paper's own dataset, or the stand-ins these machines can run), judged over those that ran."""
    ran = [line for line in lines if line.verdict.kind != NOT_RUN]
    if not ran:
        kit = KIT_STAGES.get(folder.name.removesuffix(f"-{scale}"), NO_KIT)
        why = f"no run in `{_rel(folder, root)}/`" + (f"; {kit}" if scale == "paper" else "")
        return Evidence(Verdict(NOT_RUN, (why,)))
    skipped = [line.label for line in lines if line.verdict.kind == NOT_RUN]
    if every:
        return Evidence(weakest([line.verdict if line.verdict.kind != NOT_RUN else
                                 Verdict(NOT_RUN, (f"{line.label}: not run at {scale} scale yet",))
                                 for line in lines]), tuple(lines))
    verdict = weakest([line.verdict for line in ran])
    if not skipped:
        return Evidence(verdict, tuple(lines))
    verdict = Verdict(verdict.kind, (*verdict.reasons, f"over the pairs that ran; not run: {', '.join(skipped)}"))
    return Evidence(verdict, tuple(lines), "over " + ", ".join(line.label.split(" (`")[0] for line in ran))


_METHODS = (("pgd_at", "PGD-AT"), ("trades", "TRADES"), ("mart", "MART"))
TABLE1_PAIRS = tuple((label, f"vgg16-cifar10-{m}-ibrar", f"vgg16-cifar10-{m}") for m, label in _METHODS)
# Table 2's pairs that these machines can run (its CIFAR-100 pairs need a dataset they lack)
TABLE2_PAIRS = tuple((f"ResNet18 {label}", f"resnet18-cifar10-{m}-ibrar", f"resnet18-cifar10-{m}")
                     for m, label in _METHODS)
FIVE = ("pgd10", "cw", "fgsm", "fab", "nifgsm")  # the paper's five attacks of Tables 1 and 2
_FIVE_PAPER = ("PGD", "CW", "FGSM", "FAB", "NIFGSM")


def _five_mean(run: Run) -> float | None:
    values = [run.value(a) for a in FIVE]
    return None if None in values else statistics.fmean(values)


def paper_gain(pair: str, columns: Sequence[str]) -> float:
    """The paper's gain of a Table 1 pair; a Table 2 pair's is in an image, so it counts at the paper's stated
    average gain over Tables 1 and 2."""
    if pair not in paper.TABLE1:
        return paper.TABLES_1_2_AVERAGE_GAIN
    base, ib = paper.TABLE1[pair.removesuffix("-ibrar")], paper.TABLE1[pair]
    return statistics.fmean(ib[c] - base[c] for c in columns)


def table2_ran(results: Path) -> bool:
    """Whether any of Table 2's pairs has both its runs at some scale."""
    return any(seed_runs(folder, treat) and seed_runs(folder, control)
               for folder in results.glob("table2-*") for _, treat, control in TABLE2_PAIRS)


def table1_evidence(results: Path, root: Path, scale: str, clean: bool) -> Evidence:
    """The clean-accuracy gain (`clean`: Table 1's claim) or the gain averaged over the five attacks (Tables 1
    and 2's: Table 2's ResNet18 pairs join where both their runs are there), over the pairs that ran: the mean
    over the pairs of each pair's mean over its seeds; and the paper's over those pairs."""
    folder = results / f"table1-{scale}"
    measures: dict[str, tuple[Measure, Measure | None]] = {}

    def judge(t: dict[int, Run], c: dict[int, Run], label: str) -> tuple[Verdict, str]:
        names = (f"{label} + IB-RAR", label)
        if clean:
            gain, text = _both("Natural", t, c, "clean", names)
            measures[label] = (gain, None)
            return Verdict(REPRODUCES), text
        gain = difference(t, c, "the five attacks", names, metric=_five_mean)
        aa, aa_text = _both("AutoAttack", t, c, "autoattack", names)
        measures[label] = (gain, aa)
        return Verdict(REPRODUCES), f"mean over the five attacks {gain.text(signed=True)}; {aa_text}"

    pairs, lines = list(TABLE1_PAIRS), _pair_lines(folder, root, TABLE1_PAIRS, judge)
    if not clean:
        for pair, line in zip(TABLE2_PAIRS, _pair_lines(results / f"table2-{scale}", root, TABLE2_PAIRS, judge),
                              strict=True):
            if line.verdict.kind != NOT_RUN:
                pairs.append(pair)
                lines.append(line)
    ran = [(label, group) for label, group, _ in pairs if label in measures]
    if not ran:
        return _conjunction(lines, folder, root, scale)
    effect = statistics.fmean(paper_gain(g, ("Natural",) if clean else _FIVE_PAPER) for _, g in ran)
    bar = threshold(effect)

    def pooled(which: int) -> Measure:
        parts = [m[which] for m in measures.values() if m[which] is not None]
        means = tuple(m.mean for m in parts if m.values)
        if len(means) < len(parts):
            return Measure((), tuple(r for m in parts for r in m.missing))
        return Measure(means, signs=tuple(v for m in parts for v in m.values))

    verdict = gain_verdict(pooled(0), None if clean else pooled(1), bar)
    shown = []
    for (label, group, _), line in zip(pairs, lines, strict=True):
        if label in measures:  # each pair against its own paper effect; the claim against the pooled one
            gain, aa = measures[label]
            own = threshold(paper_gain(group, ("Natural",) if clean else _FIVE_PAPER))
            line = Line(line.label, line.measured, gain_verdict(gain, aa, own), line.seeds)
        shown.append(line)
    total = f"mean over {', '.join(label for label, _ in ran)}: {pooled(0).text(signed=True)}"
    if not clean:
        total += f"; AutoAttack {pooled(1).text(signed=True)}"
    stand_in = (f", each Table 2 pair counted at the paper's average over Tables 1 and 2, "
                f"{signed_text(paper.TABLES_1_2_AVERAGE_GAIN, 2)}, since its Table 2 is an image in our copy"
                if any(g not in paper.TABLE1 for _, g in ran) else "")
    total += f" (the paper over the same pairs: {signed_text(effect, 2)}{stand_in}; threshold {bar:.1f})"
    resnet_ran = any(label in measures for label, *_ in TABLE2_PAIRS)  # then its other pairs are owed too
    skipped = [label for label, *_ in (*TABLE1_PAIRS, *(TABLE2_PAIRS if resnet_ran else ())) if label not in measures]
    reasons = (*verdict.reasons, total) + ((f"not run at {scale} scale yet: {', '.join(skipped)}",) if skipped else ())
    scope = f"over {', '.join(label for label, _ in ran)}" if skipped else ""
    return Evidence(Verdict(verdict.kind, reasons), tuple(shown), scope)


def table3_evidence(results: Path, root: Path, scale: str) -> Evidence:
    """The layers Table 3's rule names (PGD-10 at least MARGIN_PP above CE only), and those AutoAttack names."""
    folder = results / f"table3-{scale}"
    ce = seed_runs(folder, "ce")
    # every layer the experiment trains a network for: one not run yet could be a robust layer too
    layers = list(model_layers(table3.IB_CONFIG, get_scale(scale)))
    runs = {layer: seed_runs(folder, f"layer-{layer}") for layer in layers}
    if not ce and not any(runs.values()):
        return _conjunction([], folder, root, scale)
    named, judged = {}, {}  # per attack: the layers its rule names, and the layers evaluated in every seed
    for key in ("pgd10", "autoattack"):
        diffs = {layer: difference(r, ce, key, (layer, "CE only")) for layer, r in runs.items()}
        judged[key] = [layer for layer, d in diffs.items() if d.values]
        named[key] = [layer for layer in judged[key] if diffs[layer].there(MARGIN_PP)]
    wanted = list(paper.TABLE3_ROBUST_LAYERS)
    # a layer evaluated and called otherwise than the paper calls it decides; more runs cannot change it
    wrong = [layer for layer in judged["pgd10"] if (layer in named["pgd10"]) != (layer in wanted)]
    not_run = [f"IB on {layer}" for layer, r in runs.items() if not r] + ([] if ce else ["CE only"])
    if wrong:
        verdict = Verdict(DOES_NOT)
    elif not_run:
        verdict = Verdict(UNDECIDED, (f"not run at {scale} scale yet: {', '.join(not_run)}",))
    elif len(judged["pgd10"]) < len(layers):
        verdict = Verdict(UNDECIDED, ("some single-layer network or CE only is not evaluated",))
    elif len(judged["autoattack"]) < len(layers):
        verdict = Verdict(UNDECIDED, ("AutoAttack not run on every network",))
    else:
        verdict = Verdict(REPRODUCES if named["autoattack"] == wanted else PAPER_ONLY)

    def names(key: str) -> str:
        found = ", ".join(named[key]) or "none"
        if not judged[key]:
            return "-"
        return found if len(judged[key]) == len(layers) else f"{found} (of {len(judged[key])} evaluated)"

    every = [r for seeds in (ce, *runs.values()) for r in seeds.values()]
    text = "; ".join(f"{'PGD-10' if key == 'pgd10' else 'AutoAttack'} names {names(key)}" for key in named)
    seeds = common_seeds([ce, *runs.values()])
    label = (f"{len(layers)} single-layer networks and CE only (`{_rel(folder, root)}/`; {seeds_text(seeds)}; "
             f"{test_images(every)})")
    return Evidence(verdict, (Line(label, text, verdict, len(seeds)),))


def fig2_evidence(results: Path, root: Path, scale: str) -> Evidence:
    folder = results / f"fig2-{scale}"

    def judge(t: dict[int, Run], c: dict[int, Run], label: str) -> tuple[Verdict, str]:
        names = ("IB-RAR(rob)", label.removeprefix("IB-RAR(rob) − "))
        pgd, pgd_text = _both("PGD-10", t, c, "pgd10", names)
        aa, aa_text = _both("AutoAttack", t, c, "autoattack", names)
        return gain_verdict(pgd, aa, MARGIN_PP), f"{pgd_text}; {aa_text}"

    pairs = [("IB-RAR(rob) − HBaR", "ibrar-rob", "hbar"), ("IB-RAR(rob) − VIB", "ibrar-rob", "vib")]
    # the GPU kit's folders of each optimizer (`<run>-authors-optim`) are a setting of their own: the strongest
    found = [_conjunction(_pair_lines(folder, root, pairs, judge, variant), folder, root, scale)
             for variant in variants("fig2", scale, folder) or [""]]
    if len(found) == 1:
        return found[0]
    return Evidence(strongest([e.verdict for e in found]), tuple(line for e in found for line in e.lines))


def _adaptive(run: Run) -> float | None:
    values = [v for a in ("adaptive10", "adaptive100") if (v := run.value(a)) is not None]
    return min(values) if values else None


def table6_evidence(results: Path, root: Path, scale: str) -> Evidence:
    """With adversarial training, PGD_AD (the lower of its 10 and 100 steps) no more than MARGIN_PP below
    PGD-10, and AutoAttack confirming robustness; without, PGD_AD leaving IB-RAR above CE only."""
    folder = results / f"table6-{scale}"

    def no_drop(t: dict[int, Run], _: dict[int, Run], label: str) -> tuple[Verdict, str]:
        drop = Measure(tuple(a - p for r in t.values() if (a := _adaptive(r)) is not None
                             and (p := r.value("pgd10")) is not None))
        aa = side(t, "autoattack")
        if not drop.values:
            verdict = Verdict(UNDECIDED, ("PGD_AD or PGD-10 not run",))
        elif (drop.mean or 0) < -MARGIN_PP:
            verdict = Verdict(DOES_NOT)
        elif not aa.values:
            verdict = Verdict(UNDECIDED, ("AutoAttack not run",))
        else:
            verdict = Verdict(REPRODUCES if (aa.mean or 0) >= MARGIN_PP else PAPER_ONLY)
        return verdict, (f"PGD_AD − PGD-10 {drop.text(signed=True)}; AutoAttack leaves {aa.text(empty='-')}")

    def above_ce(t: dict[int, Run], c: dict[int, Run], label: str) -> tuple[Verdict, str]:
        names = ("plain IB-RAR", "plain CE")
        attack, attack_text = _both("PGD_AD", t, c, "PGD_AD", names, metric=_adaptive)
        aa, aa_text = _both("AutoAttack", t, c, "autoattack", names)
        return gain_verdict(attack, aa, MARGIN_PP), f"{attack_text}; {aa_text}"

    # PGD-AT + IB-RAR is Table 1's network, of one optimizer; the plain pair is Table 4's rows, which the GPU kit
    # trains with either (`<network>-authors-optim`): a setting of its own each, the strongest
    trained = _pair_lines(folder, root, [("PGD-AT + IB-RAR, PGD_AD against PGD-10", "at-ibrar", "at-ibrar")], no_drop)
    plain = [("plain IB-RAR − plain CE under PGD_AD", "plain-ibrar", "plain-ce")]
    found = [_conjunction([*trained, *_pair_lines(folder, root, plain, above_ce, variant)], folder, root, scale)
             for variant in variants("table6", scale, folder) or [""]]
    if len(found) == 1:
        return found[0]
    return Evidence(strongest([e.verdict for e in found]), tuple(line for e in found for line in e.lines))


def _epochs(run: Run) -> int | None:
    epochs = (run.config.get("train") or {}).get("epochs")
    return None if epochs is None else int(epochs)


def _trained(run: Run) -> bool:
    return (epochs := _epochs(run)) is not None and run.epochs_done >= epochs


def _training_status(run: Run | None) -> str:
    return "no run" if run is None else f"trained {run.epochs_done} of {_epochs(run)} epochs"


def _reach_epoch(run: Run, target: float) -> int | None:
    for row in RunFolder(run.path).metrics():
        if row.get("test_clean_acc") is not None and row["test_clean_acc"] >= target:
            return int(row["epoch"])
    return None


def convergence_evidence(results: Path, root: Path, scale: str) -> Evidence:
    """Epochs saved: the epoch at which the plain run first reaches its own final monitored clean accuracy,
    minus the epoch at which the run with the IB terms does (one past its last when it never does)."""
    def saved(t: dict[int, Run], c: dict[int, Run], label: str) -> tuple[Verdict, str]:
        # a run still training has no final accuracy yet, and its curve would count as never reaching one
        rows = ((f"{label}, with the IB terms", t), (f"{label}, plain", c))
        unfinished = tuple(f"{name} seed {seed}: {_training_status(runs.get(seed))}"
                           for seed in sorted(set(t) | set(c)) for name, runs in rows
                           if seed not in runs or not _trained(runs[seed]))
        if unfinished:
            measure = Measure((), unfinished)
            return (gain_verdict(measure, None, CONVERGENCE_EPOCHS),
                    f"epochs saved reaching the plain run's final clean accuracy: {measure.text()}")
        values = []
        for seed in sorted(set(t) & set(c)):
            base = RunFolder(c[seed].path).metrics()
            if not base or not RunFolder(t[seed].path).metrics():
                continue
            final = base[-1].get("test_clean_acc", 0.0)
            with_ib = _reach_epoch(t[seed], final)
            values.append(float((_reach_epoch(c[seed], final) or len(base))
                                - (with_ib if with_ib is not None else len(RunFolder(t[seed].path).metrics()) + 1)))
        measure = Measure(tuple(values), ("no metrics.jsonl",))
        verdict = gain_verdict(measure, None, CONVERGENCE_EPOCHS)
        return verdict, f"epochs saved reaching the plain run's final clean accuracy: {measure.text(signed=True)}"

    table1, fig4 = results / f"table1-{scale}", results / f"fig4-{scale}"
    lines = [*_pair_lines(table1, root, [("MART (CIFAR-10, Table 1)", "vgg16-cifar10-mart-ibrar", "vgg16-cifar10-mart"),
                                         ("PGD-AT (CIFAR-10, Table 1)", "vgg16-cifar10-pgd_at-ibrar",
                                          "vgg16-cifar10-pgd_at")], saved),
             *_pair_lines(fig4, root, [("MART (SVHN, Figure 4)", "mart-ib-first-epoch", "mart"),
                                       ("PGD-AT (SVHN, Figure 4)", "pgd_at-ibrar", "pgd_at")], saved)]
    return _conjunction(lines, table1, root, scale, every=False)


def paper_pgd(row: str) -> float:
    """The paper's PGD-10 accuracy of a VGG16 row of Table 4 ("6": row (6), IB-RAR)."""
    return paper.TABLE4[_ROW_GROUPS[row]]["PGD"]
