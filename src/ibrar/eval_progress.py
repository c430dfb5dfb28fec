"""Progress of a long evaluation: one bar per attack and per AutoAttack stage (examples done, robust so far,
the evaluation's time left, re-estimated as pieces finish), or, for logs, one line per finished piece.

`ibrar.evaluate` and `ReferenceAutoAttack.run` call ``start(name, total)``, ``advance(done, broken)`` per batch
and ``finish(robust)``; with an `EvalPlan` the time left is the plan's remaining pieces priced by what the
finished ones measured (a piece that took twice its estimate doubles the rest).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import IO

from tqdm import tqdm

from ibrar.eval_estimate import EvalPlan, Piece, format_duration


class EvalProgress:
    """Bars on ``stream`` (stderr), or with ``quiet`` one line per finished piece."""

    def __init__(self, plan: EvalPlan | None = None, quiet: bool = False, stream: IO[str] | None = None) -> None:
        self.plan, self.quiet = plan, quiet
        self.stream = stream if stream is not None else sys.stderr
        self._started: set[int] = set()  # indices of plan pieces already begun
        self._predicted = 0.0  # seconds the finished planned pieces were expected to take (at their real size)
        self._measured = 0.0  # and what they took
        self._piece: Piece | None = None
        self._index: int | None = None
        self._bar: tqdm | None = None
        self._name, self._total, self._done, self._robust, self._t0 = "", 0, 0, 0, 0.0
        self.prefix = ""  # put before each piece's name (a steps curve's attacks, the masking check's)
        # each finished piece of the plan: its estimate at its real size beside what it took (eval.json keeps them,
        # so the estimator can be checked piece by piece on any device)
        self.timings: list[dict[str, float | int | str]] = []

    @contextlib.contextmanager
    def section(self, prefix: str) -> Iterator[None]:
        """Name the pieces started inside ``prefix + name``."""
        before, self.prefix = self.prefix, prefix
        try:
            yield
        finally:
            self.prefix = before

    # -- what the evaluation calls --------------------------------------------------------------------
    def start(self, name: str, total: int) -> None:
        """A piece begins: ``total`` examples to attack, all of them robust so far."""
        self.finish_open()
        name = self.prefix + name
        self._name, self._total, self._done, self._robust = name, total, 0, total
        self._index = self._match(name)
        self._piece = self.plan.pieces[self._index] if self._index is not None and self.plan else None
        if self._piece is not None:
            self._piece.examples, self._piece.expected = total, False  # the real size replaces the planned one
        self._t0 = time.perf_counter()
        if not self.quiet:
            self._bar = tqdm(total=total, desc=name, unit="ex", file=self.stream, leave=True, dynamic_ncols=True)
            self._bar.set_postfix_str(self._postfix(), refresh=False)

    def advance(self, done: int, broken: int) -> None:
        """``done`` more examples attacked, ``broken`` of them no longer robust."""
        self._done += done
        self._robust -= broken
        if self._bar is not None:
            self._bar.set_postfix_str(self._postfix(), refresh=False)
            self._bar.update(done)

    def finish(self, robust: int | None = None) -> None:
        """The piece ends with ``robust`` examples robust (default: the count kept by ``advance``)."""
        if self._index is None and self._bar is None and not self._name:
            return
        if robust is not None:
            self._robust = robust
        seconds = time.perf_counter() - self._t0
        if self._piece is not None and self.plan is not None:
            estimated = self._piece.seconds(self.plan.probe)
            self._predicted += estimated
            self._measured += seconds
            self.timings.append({"piece": self._name, "examples": self._total, "estimated_s": estimated,
                                 "seconds": seconds})
            if self._piece.informs_survivors or self._piece.name.startswith("autoattack"):
                # what a PGD-type attack, or an AutoAttack stage, leaves is the best prior for the next stages
                later = [p for p in self.plan.pieces[self._index + 1:] if p.survivors and not p.counted]
                for p in later:
                    p.examples = min(p.examples, self._robust) if self._piece.survivors else self._robust
                    p.expected = p.expected and p.examples < self._robust  # a prior below the count stays one
        if self._bar is not None:
            self._bar.set_postfix_str(self._postfix(), refresh=False)
            self._bar.close()
            self._bar = None
        else:
            self.stream.write(self._line(seconds) + "\n")
            self.stream.flush()
        self._name, self._index, self._piece = "", None, None

    def finish_open(self) -> None:
        """Close a piece left open (an attack that ended without reporting its robust count)."""
        if self._name:
            self.finish()

    # -- the time left -----------------------------------------------------------------------------------
    def seconds_left(self) -> float | None:
        """The evaluation's time left: the current piece by its own rate once it has begun, the pieces after it
        by the plan, rescaled by measured / planned over the pieces finished so far. None without a plan."""
        if self.plan is None:
            return None
        probe = self.plan.probe
        scale = self._measured / self._predicted if self._predicted > 0 else 1.0
        left = 0.0
        if self._piece is not None:
            elapsed = time.perf_counter() - self._t0
            if self._done > 0:
                left += elapsed / self._done * (self._total - self._done)
            else:
                left += max(0.0, self._piece.seconds(probe) * scale - elapsed)
        after = [p for i, p in enumerate(self.plan.pieces) if i not in self._started]
        return left + sum(p.seconds(probe) for p in after) * scale

    def _match(self, name: str) -> int | None:
        if self.plan is None:
            return None
        for i, piece in enumerate(self.plan.pieces):
            if i not in self._started and piece.name == name:
                self._started.add(i)
                return i
        return None

    def _postfix(self) -> str:
        left = self.seconds_left()
        text = f"robust {self._robust}"
        return text if left is None else f"{text}, evaluation left ~{format_duration(left)}"

    def _line(self, seconds: float) -> str:
        left = self.seconds_left()
        tail = "" if left is None or left < 0.5 else f"; evaluation left about {format_duration(left)}"
        return f"{self._name}: {self._total} examples attacked, {self._robust} robust, {seconds:.1f} s{tail}"


def as_progress(progress: EvalProgress | bool | None) -> EvalProgress | None:
    """``True``: bars on stderr; ``False``/``None``: silent; an `EvalProgress` as given."""
    if progress is True:
        return EvalProgress()
    return progress or None
