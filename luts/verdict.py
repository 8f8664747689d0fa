"""Is a measured latency ratio within its budget? A verdict that admits noise.

The pruned network and the teacher are timed in interleaved rounds (``measure_pair``), so
each round gives one paired ratio, pruned / teacher, in which a slow drift of the machine
cancels. The ratio reported is the median over rounds; its interval is the distribution-free
(sign-test) confidence interval for that median: the k-th smallest and the k-th largest
per-round ratio, with k the largest that keeps each one-sided error at most 5%. Two to four
rounds cannot reach 95%: the interval is then the smallest and the largest ratio, and the
confidence they do give is stated (1 - 2^-n: 75% for 2 rounds, 87.5% for 3, 93.75% for 4,
96.9% for 5). The only assumption is that the rounds are independent draws; nothing about
the shape of the noise (a shared machine's bursts are far from normal).

    met        the interval's top is within the budget: every round but k - 1 measured the
               pruned network within it (claimed at the stated one-sided confidence)
    missed     the interval's bottom is above the budget
    uncertain  the interval straddles the budget; a rerun may go either way

A ratio above the budget is therefore never "met", whatever the spread.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from math import comb
from typing import Sequence

import numpy as np

# One-sided error of a verdict, where the rounds allow it (see above).
ALPHA = 0.05
# Round-to-round spread ((max - min) / median of per-round medians) above which a run warns.
SPREAD_WARN = 0.10


def _tail(n: int, k: int) -> float:
    """P(Binomial(n, 1/2) <= k - 1): the chance that k-th order statistic lies above the median."""
    return sum(comb(n, i) for i in range(k)) / 2 ** n


def order_k(n: int, alpha: float = ALPHA) -> int:
    """The largest k >= 1 with one-sided error ``_tail(n, k)`` <= alpha (1 when none has)."""
    k = 1
    while k + 1 <= (n + 1) // 2 and _tail(n, k + 1) <= alpha:
        k += 1
    return k


@dataclass(frozen=True)
class RatioVerdict:
    ratio: float              # median of the per-round ratios
    low: float                # confidence interval for it (sign test)
    high: float
    confidence: float         # one-sided, of each bound; 1 - 2^-n for k = 1
    rounds: int
    budget: float | None = None

    @property
    def spread(self) -> float:
        """The interval's width relative to the ratio."""
        return (self.high - self.low) / self.ratio if self.ratio > 0 else float("inf")

    @property
    def verdict(self) -> str | None:
        if self.budget is None:
            return None
        if self.high <= self.budget:
            return "met"
        if self.low > self.budget:
            return "missed"
        return "uncertain"

    @property
    def text(self) -> str | None:
        """'met', 'missed' or 'uncertain (spread X%)'."""
        v = self.verdict
        return f"uncertain (spread {100 * self.spread:.0f}%)" if v == "uncertain" else v

    def describe(self) -> str:
        """E.g. '66% of the teacher (63-69% at 97% confidence, 5 rounds)'."""
        return (f"{100 * self.ratio:.0f}% of the teacher ({100 * self.low:.0f}-"
                f"{100 * self.high:.0f}% at {confidence_text(self.confidence)} confidence, "
                f"{self.rounds} round{'s' if self.rounds != 1 else ''})")

    def as_dict(self) -> dict:
        return {**asdict(self), "spread_of_ratio": self.spread, "verdict": self.verdict,
                "verdict_text": self.text}


def ratio_verdict(round_ratios: Sequence[float], budget: float | None = None,
                  alpha: float = ALPHA) -> RatioVerdict:
    """The median per-round ratio, its sign-test interval, and the verdict against ``budget``."""
    r = np.sort(np.asarray(round_ratios, dtype=float))
    n = len(r)
    if n == 0 or not np.all(np.isfinite(r)):
        raise ValueError(f"need finite per-round ratios, got {list(round_ratios)}")
    k = order_k(n, alpha)
    return RatioVerdict(float(np.median(r)), float(r[k - 1]), float(r[n - k]),
                        1 - _tail(n, k), n, budget)


def verdict_of(measurement: dict, budget: float | None = None) -> RatioVerdict:
    """The verdict of a ``measure_pair`` result; one without per-round ratios (a stand-in
    that returns only the two latencies) counts as one round."""
    ratios = measurement.get("round_ratios") or \
        [measurement["pruned_ms"] / measurement["teacher_ms"]]
    return ratio_verdict(ratios, budget)


def confidence_text(c: float) -> str:
    """75%, 87.5%, 96.9%: one decimal, none when it is zero."""
    return f"{100 * c:.1f}".rstrip("0").rstrip(".") + "%"


def spread_warning(spread: float | None, threshold: float = SPREAD_WARN,
                   consequence: str = "verdicts marked uncertain may flip on a rerun"
                   ) -> str | None:
    """One line when measurements varied more than ``threshold`` between rounds, else None."""
    if spread is None or not np.isfinite(spread) or spread <= threshold:
        return None
    return (f"warning: measurements on this machine varied {100 * spread:.0f}% between rounds "
            f"(threshold {100 * threshold:.0f}%); {consequence}")


__all__ = ["ALPHA", "SPREAD_WARN", "RatioVerdict", "ratio_verdict", "verdict_of", "order_k",
           "confidence_text", "spread_warning"]
