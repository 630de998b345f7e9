"""The one noise rule: when a difference between two arms is measured, and when it is within the run's own noise.

Every verdict that compares arms (a remedy against a baseline, one rate against another, LoRA's speed against full
FT's) decides on **paired differences**: the arms run with the same seeds (same data order per seed), or in the same
interleaved rounds for timings, and dᵢ = aᵢ − bᵢ is taken per seed. With n pairs, mean d̄ and standard error
SE = sd(d)/√n, a claim "the difference is above t" is

- **settled true** when d̄ − t > 2·SE,
- **settled false** when t − d̄ > 2·SE,
- **not settled** otherwise, and always when there are fewer than MIN_PAIRS pairs (one seed measures no noise).

Stated once, in CLAIMS.md; used by every chapter through `paired(...)` and `Paired.above(...)`.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Mapping, Sequence

MIN_PAIRS = 3  # fewer pairs than this measure no usable noise: the verdict is "not settled"
SE_MULTIPLE = 2  # a difference counts when it is more than 2 standard errors away (about 95 % for a normal mean)
SINGULAR = {"seeds": "seed", "rounds": "round", "batches": "batch", "pairs": "pair"}


@dataclass(frozen=True)
class Paired:
    """Paired differences aᵢ − bᵢ (one per seed or round) and what the noise rule makes of them."""

    diffs: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.diffs)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.diffs) if self.diffs else math.nan

    @property
    def se(self) -> float:
        """Standard error of the mean difference; nan with fewer than 2 pairs (no spread to measure)."""
        return statistics.stdev(self.diffs) / math.sqrt(self.n) if self.n >= 2 else math.nan

    def above(self, threshold: float = 0.0) -> bool | None:
        """True when the mean difference is above `threshold` by more than SE_MULTIPLE standard errors, False when it
        is below by as much, None when that is not settled (within the noise, or fewer than MIN_PAIRS pairs)."""
        if self.n < MIN_PAIRS or any(math.isnan(d) for d in self.diffs):
            return None
        margin = SE_MULTIPLE * self.se
        if self.mean - threshold > margin:
            return True
        if threshold - self.mean > margin:
            return False
        return None

    def undecided(self, over: str = "seeds") -> str:
        """Why the rule said "not settled": too few pairs to measure the noise, or a difference inside it."""
        if self.n < MIN_PAIRS:
            return f"{self.n} {over if self.n != 1 else SINGULAR.get(over, over)} cannot measure the noise ({MIN_PAIRS} needed)"
        return f"within the noise of these {self.n} {over}"

    def below(self, threshold: float = 0.0) -> bool | None:
        """True when the mean difference is credibly below `threshold` (the mirror of `above`)."""
        result = self.above(threshold)
        return None if result is None else not result

    def describe(self, fmt: str = "+.3f", unit: str = "", over: str = "seeds") -> str:
        """'−0.031 ± 0.012 (mean ± 2 SE over 3 seeds)', or the one value and 'one seed: noise not measured'. `over`:
        what the pairs are (seeds, rounds, batches)."""
        if self.n == 0:
            return "no pairs"
        if self.n == 1:
            return f"{self.mean:{fmt}}{unit} (one {SINGULAR.get(over, over)} only: noise not measured)"
        return (f"{self.mean:{fmt}}{unit} ± {SE_MULTIPLE * self.se:{fmt.lstrip('+')}}{unit} (mean ± {SE_MULTIPLE} SE over "
                f"{self.n} {over})")


@dataclass(frozen=True)
class Independent(Paired):
    """The difference of the means of two independent samples a − b (different rows, not pairs), with Welch's
    standard error √(var a / nₐ + var b / n_b), decided by the same rule as Paired; n is the smaller sample."""

    a: tuple[float, ...] = ()
    b: tuple[float, ...] = ()

    @property
    def n(self) -> int:
        return min(len(self.a), len(self.b))

    @property
    def mean(self) -> float:
        return statistics.fmean(self.a) - statistics.fmean(self.b) if self.n else math.nan

    @property
    def se(self) -> float:
        if self.n < 2:
            return math.nan
        return math.sqrt(statistics.variance(self.a) / len(self.a) + statistics.variance(self.b) / len(self.b))


def independent(a: Sequence[float], b: Sequence[float]) -> Independent:
    """The difference of the means of two independent samples (e.g. the losses of seen and of unseen rows)."""
    return Independent((), tuple(map(float, a)), tuple(map(float, b)))


def pairs(a: Mapping | Sequence, b: Mapping | Sequence) -> list[tuple]:
    """(aᵢ, bᵢ) pairs: two dicts keyed by seed (only the seeds both arms ran), or two sequences of the same length
    (same order; ValueError otherwise)."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return [(a[s], b[s]) for s in a if s in b]
    a, b = list(a), list(b)
    if len(a) != len(b):
        raise ValueError(f"Paired arms need one value each per seed: got {len(a)} and {len(b)} values.")
    return list(zip(a, b))


def paired(a: Mapping | Sequence, b: Mapping | Sequence) -> Paired:
    """The paired differences a − b of pairs(a, b). Raises ValueError when nothing pairs up."""
    values = pairs(a, b)
    if not values:
        raise ValueError("No seed appears in both arms: run both arms with the same seeds.")
    return Paired(tuple(float(x) - float(y) for x, y in values))


def by_seed(rows, value) -> dict[int, float]:
    """{seed: value(row)} for one arm's rows (anything with a .seed): the form paired() and relative_change() pair."""
    return {r.seed: value(r) for r in rows}


def relative_change(a: Mapping, b: Mapping) -> Paired:
    """The relative change of arm a from arm b, seed by seed (a[s] / b[s] - 1 for every seed both ran: same data order,
    same initial adapters), as paired differences for the noise rule."""
    return Paired(tuple(a[s] / b[s] - 1 for s in a if s in b))


def mean_of(n: int, over: str = "seeds") -> str:
    """How a number averaged over n seeds (or rounds) is labelled: "one seed" or "mean of 3 seeds"."""
    return f"one {SINGULAR.get(over, over)}" if n == 1 else f"mean of {n} {over}"


def log_ratios(a: Mapping | Sequence, b: Mapping | Sequence) -> Paired:
    """Paired log(aᵢ / bᵢ) of pairs(a, b): for rates (tokens/s) whose claim is a ratio ("at least 1.2x"): compare with
    log(ratio)."""
    return Paired(tuple(math.log(x / y) for x, y in pairs(a, b)))
