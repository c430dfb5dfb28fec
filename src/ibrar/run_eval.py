"""Evaluate a trained run folder (or checkpoint): what `ibrar eval` and the end of `ibrar train` do.

Loads the model and mask safely, picks the same seeded test subset every time, runs the attacks through
`ibrar.evaluate`, adds the attack-steps curves and the gradient-masking checks, and writes `eval.json`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ibrar.attacks import build_attack
from ibrar.build import ModelBundle, build_regularizer, resolve_device
from ibrar.checkpoint import find_checkpoint
from ibrar.config import RunConfig
from ibrar.data import ImageData, load_split, resolve_data_root
from ibrar.evaluate import evaluate, format_table, masking_warnings, steps_curve
from ibrar.run_folder import load_trained

DEFAULT_ATTACKS = ("fgsm", "pgd10", "cw", "fab", "nifgsm")
EVAL_FILE = "eval.json"


def evaluate_run(
    path: str | Path,
    data_root: str | Path | None = None,
    attacks: Sequence[str] | None = None,
    n: int | None = None,
    steps: Sequence[int] | None = None,
    seed: int = 0,
    batch_size: int = 256,
    quiet: bool = False,
    device: str = "auto",
    test_data: ImageData | None = None,
    large_eps_check: bool = True,
    loaded: tuple[ModelBundle, RunConfig, dict] | None = None,
    out_dir: str | Path | None = None,
) -> str:
    """Run the evaluation, write `eval.json` beside the checkpoint, and return the table to print.

    `loaded` is a model already loaded (`path` then only names its weights, e.g. a RobustBench zoo model) and
    `out_dir` where its eval.json goes.
    """
    dev = resolve_device(device)
    bundle, config, state = loaded if loaded is not None else load_trained(path, device=dev)
    model = bundle.model
    if test_data is None:
        root = resolve_data_root(config.data.root or data_root)
        test_data = load_split(config.data.name, root, "test")
    names = list(attacks) if attacks is not None else list(DEFAULT_ATTACKS)
    if n is not None and n < 1:
        raise ValueError(f"--n: expected a positive number of test examples, got {n}")
    built = {}
    for name in names:
        params: dict[str, Any] = {"seed": seed}
        if name.startswith("adaptive"):  # PGD_AD maximises the run's own IB-RAR loss
            params["regularizer"] = build_regularizer(config, bundle, int(state.get("num_classes") or 10))
        built[name] = build_attack(name, model, eps=config.eval.eps, **params)
    report = evaluate(model, test_data.images, test_data.labels, built, batch_size=batch_size, device=dev,
                      seed=seed, n=n)
    result = report.to_dict()
    result["checkpoint"] = str(find_checkpoint(path))
    curves: dict[str, dict[int, float]] = {}
    for family in ("pgd", "cw", "nifgsm") if steps else ():
        curves[family] = steps_curve(model, test_data.images, test_data.labels, family, steps=list(steps),
                                     eps=config.eval.eps, batch_size=batch_size, device=dev, seed=seed, n=n)
    if curves:
        result["curves"] = {fam: {str(k): v for k, v in c.items()} for fam, c in curves.items()}
    warnings = masking_warnings(report, model, test_data.images, test_data.labels, curve=curves.get("pgd"),
                                large_eps=0.5 if large_eps_check else None, batch_size=batch_size)
    result["warnings"] = warnings
    result["reference"] = config.eval.reference
    out_dir = Path(out_dir) if out_dir is not None else Path(path) if Path(path).is_dir() else Path(path).parent
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / EVAL_FILE).write_text(json.dumps(result, indent=2))
    return render(report, result, config.eval.reference, config.eval.reference_label)


def render(report: Any, result: dict[str, Any], reference: dict[str, float] | None, label: str) -> str:
    lines = [format_table(report)]
    if reference:
        measured = {"clean": report.clean, **{r.name: r.accuracy for r in report.attacks}}
        lines.append(f"\n{'':12}{'this run':>10}{label:>14}")
        for key, ref in reference.items():
            got = measured.get(key)
            shown = "-" if got is None else f"{got:.2%}"
            lines.append(f"{key:12}{shown:>10}{ref:>14.2%}")
    for curve_name, curve in result.get("curves", {}).items():
        lines.append(f"{curve_name} by steps: " + ", ".join(f"{k}: {v:.2%}" for k, v in curve.items()))
    for warning in result.get("warnings", []):
        lines.append(f"WARNING (gradient masking?): {warning}")
    return "\n".join(lines)


def load_eval(run_dir: str | Path) -> dict[str, Any] | None:
    path = Path(run_dir) / EVAL_FILE
    return json.loads(path.read_text()) if path.is_file() else None

