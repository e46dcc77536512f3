"""What a comparison lets the report say: a verdict word per paired difference, and ranks that come from
paired tests rather than from overlapping intervals.

Verdict of ``group − baseline`` (:func:`verdict`), with ``α`` the report's level and the p-values corrected
over the metric's family (:func:`~divergence_lab.report.statistics.correct`):

* ``better`` / ``worse`` — the corrected p-value is below ``α`` and ``d̄`` lies on the better / worse side
  of the metric's direction (``higher`` / ``lower`` for a metric without one);
* ``equivalent within ±ε`` — not different, and the corrected TOST p-value is below ``α`` (only where the
  study declares ``report.equivalence_margin``);
* ``no difference detected (could detect ≥ MDE)`` — neither: the study had power ``1 − β`` only for true
  effects of at least the MDE; smaller ones may exist;
* ``not tested (…)`` — fewer than three paired seeds, or the same difference on every seed.

Rank (:func:`paired_ranks`): groups sorted by mean, best first. Each other group is compared with the best
one, paired by seed, with the report's test, the family of ``k − 1`` comparisons corrected together. A
group the test does not separate from the best (or cannot test) is *tied with the best* (``1=``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from divergence_lab.report.statistics import PairedDifference, Settings, correct, paired_difference


@dataclass(frozen=True)
class Verdict:
    """``word`` is what the table prints; ``kind`` one of better, worse, equivalent, undetected, untested."""

    kind: str
    word: str

    @property
    def significant(self) -> bool:
        return self.kind in ("better", "worse")


def verdict(
    difference: PairedDifference, direction: int, settings: Settings, shown: Callable[[float], str] = str
) -> Verdict:
    """The verdict on ``difference`` for a metric of ``direction`` (+1, −1 or 0); ``shown`` formats a value
    of the metric (the MDE, the margin) the way the tables do."""
    if not difference.tested:
        return Verdict("untested", f"not tested ({difference.untested_reason})")
    if difference.p_adjusted is not None and difference.p_adjusted < settings.alpha:
        higher = difference.mean > 0
        if direction == 0:
            return Verdict("better" if higher else "worse", "higher" if higher else "lower")
        better = higher == (direction > 0)
        return Verdict("better" if better else "worse", "better" if better else "worse")
    margin = settings.equivalence_margin
    tost = difference.tost_p_adjusted
    if margin is not None and tost is not None and tost < settings.alpha:
        return Verdict("equivalent", f"equivalent within ±{shown(margin)}")
    if difference.mde is None or difference.mde == float("inf"):
        return Verdict("undetected", f"not detectable with n={difference.n_pairs} ({settings.test} test)")
    return Verdict("undetected", f"no difference detected (could detect ≥ {shown(difference.mde)})")


@dataclass(frozen=True)
class Rank:
    """Position by mean (1 = best) and whether the paired tests separate the group from the best one.

    ``tied_with_best``: the paired test against the best group does not reject (after correction) or
    cannot be made (the best group itself is tied when any other group is); ``tested``: every comparison
    with the best group was tested.
    """

    position: int
    tied_with_best: bool
    tested: bool

    def describe(self) -> str:
        """``1=`` for a group tied with the best, else its position."""
        return "1=" if self.tied_with_best else str(self.position)


def paired_ranks(
    per_seed: dict[str, dict[int, float]], means: dict[str, float], direction: int, settings: Settings
) -> dict[str, Rank]:
    """Ranks of the groups (``name -> {seed: value}``, ``name -> mean``) for a metric of ``direction``."""
    if direction == 0 or not means:
        return {}
    order = sorted(means, key=lambda name: -direction * means[name])
    best = order[0]
    others = order[1:]
    # a rank needs only the corrected test: no equivalence test, no seeds-needed search
    testing = replace(settings, equivalence_margin=None, effect_of_interest=None)
    differences = correct(
        [paired_difference(per_seed[name], per_seed[best], testing, len(others)) for name in others],
        settings.correction,
    )
    tied, tested = {}, {}
    for name, difference in zip(others, differences, strict=True):
        tested[name] = difference is not None and difference.tested
        separated = tested[name] and difference.p_adjusted < settings.alpha  # type: ignore[union-attr]
        tied[name] = not separated
    ranks = {best: Rank(1, any(tied.values()), all(tested.values()) if others else False)}
    for position, name in enumerate(others, start=2):
        ranks[name] = Rank(position, tied[name], tested[name])
    return ranks
