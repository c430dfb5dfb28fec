"""What an evaluation wrote (`eval.json`), as one typed record with a schema version, so that every reader (the
report, the ledger, plots, export, the GPU kit) reads it the same way and a damaged or foreign file is an error
that names the file and the field, never a KeyError deep inside a table.

Version 1 is the layout ibrar has written since threat models were separated; a file without `schema_version`
was written before the field existed and is read as version 1. Fields this version does not know are kept as
they are (a newer ibrar's additions survive a read and a write), but a file of a newer schema is refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ibrar.errors import IbrarError
from ibrar.run_files import EVAL_FILE

SCHEMA_VERSION = 1


class EvaluationError(IbrarError, ValueError):
    """An eval.json that cannot be read: not JSON, a newer schema, or a field of the wrong kind."""


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow")


class AttackRecord(_Record):
    """One attack's result: accuracy as a fraction of the evaluated examples (None: it could not run)."""

    name: str
    accuracy: float | None
    attack: str | None = None  # the implementing class
    params: dict[str, Any] = Field(default_factory=dict)
    norm: str = "Linf"
    eps: float | None = None
    n_robust: int | None = None
    n_attacked: int | None = None
    seconds: float | None = None
    loss_clean: float | None = None
    loss_adv: float | None = None
    median_l2: float | None = None  # L2 attacks: median size of the perturbations that succeeded
    # an attack run on a seeded subset of the evaluation's examples (the GPU kit's AutoAttack entry)
    n: int | None = None
    subset_seed: int | None = None
    clean_on_subset: float | None = None


class WorstCaseRecord(_Record):
    """The per-example worst case over the attacks of one threat model."""

    norm: str
    eps: float | None = None
    attacks: list[str]
    accuracy: float


class Evaluation(_Record):
    """An `eval.json`: clean and robust accuracies (fractions) on `n` test examples chosen with `seed`."""

    schema_version: int = SCHEMA_VERSION
    n: int
    seed: int
    clean: float
    attacks: list[AttackRecord] = Field(default_factory=list)
    eps: float | None = None
    worst_case: float | None = None  # over the L-inf attacks at `eps` (the evaluation's threat model)
    worst_cases: list[WorstCaseRecord] | None = None  # one per threat model; None: written before they existed
    worst_case_only: bool = False
    seconds: float | None = None  # the attacks' time
    total_seconds: float | None = None  # the whole evaluation's, curves and masking checks included
    autoattack: dict[str, Any] | None = None  # the reference AutoAttack's per-stage results, when it ran
    curves: dict[str, dict[str, float | None]] = Field(default_factory=dict)  # family -> steps -> accuracy
    warnings: list[str] = Field(default_factory=list)  # the gradient-masking checks'
    model_warnings: list[str] = Field(default_factory=list)  # about the model itself (a user's model)
    checkpoint: str | None = None
    reference: dict[str, float] | None = None  # the numbers `eval.reference` printed beside this run
    meta: dict[str, Any] = Field(default_factory=dict)  # when, where and at which commit it ran
    estimate: dict[str, Any] | None = None  # the time estimated before the start
    subsets: dict[str, Any] = Field(default_factory=dict)  # the GPU kit: a subset's evaluation merged in
    notes: list[str] = Field(default_factory=list)
    recovered_from: str | None = None  # rebuilt from a printed table when the file itself was lost

    @classmethod
    def from_dict(cls, data: Any, source: str | Path = EVAL_FILE) -> Evaluation:
        if not isinstance(data, dict):
            raise EvaluationError(f"{source}: expected a JSON object written by `ibrar eval`, got "
                                  f"{type(data).__name__}")
        version = data.get("schema_version", 1)
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise EvaluationError(f"{source}: schema_version {version!r} is newer than this ibrar reads "
                                  f"({SCHEMA_VERSION}); upgrade ibrar to read it")
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'the file'}: {e['msg']}"
                                 for e in err.errors()[:3])
            raise EvaluationError(f"{source}: not an evaluation ibrar can read ({problems}); evaluate the run "
                                  "again with `ibrar eval`") from None

    @classmethod
    def read(cls, path: str | Path) -> Evaluation:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise EvaluationError(f"{path}: not valid JSON ({err}); evaluate the run again with `ibrar eval`") \
                from None
        return cls.from_dict(data, path)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: the fields that were given (defaults a reader fills in are not written back)."""
        return {"schema_version": self.schema_version, **self.model_dump(mode="json", exclude_unset=True)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def attack(self, name: str) -> AttackRecord | None:
        """The result of the attack evaluated as `name` (e.g. 'pgd10'), or None when it did not run."""
        return next((a for a in self.attacks if a.name == name), None)

    def metric(self, key: str) -> float | None:
        """Accuracy in percent: 'clean', 'worst_case', or an attack's name as evaluated (e.g. 'pgd10')."""
        if key == "clean":
            return 100 * self.clean
        if key == "worst_case":
            return None if self.worst_case is None else 100 * self.worst_case
        found = self.attack(key)
        return None if found is None or found.accuracy is None else 100 * found.accuracy

    def linf_case(self) -> tuple[list[str], float | None] | None:
        """The attacks that entered the L-infinity worst case and its eps; None when the file does not say (an
        eval.json written before threat models were separated)."""
        for case in self.worst_cases or []:
            if "inf" in case.norm.lower():
                return list(case.attacks), case.eps
        return None
