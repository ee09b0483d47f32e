"""Whether a difference between two models on the same test images is real: McNemar's exact test
and paired, seeded bootstrap intervals (:func:`paired_significance`).

McNemar's test sees only the discordant images (one model right, the other wrong); its exact
p-value is the two-sided binomial test of those counts at one half (scipy's ``binomtest``,
which statsmodels' ``mcnemar(exact=True)`` equals). The intervals are percentile intervals over
the same resamples of the test rows for every model, so a pair's difference is resampled
paired. Accuracy and macro F1 of every resample are computed at once from per-row counts (a
matrix product) rather than by 2,000 calls of scikit-learn's metrics; the test suite checks
them against ``f1_score`` resample by resample.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np

#: Bootstrap resamples by default.
RESAMPLES = 2000
#: The intervals' coverage.
LEVEL = 0.95
#: Resamples computed at once (bounds memory to this many rows of counts).
CHUNK = 250


@dataclass(frozen=True)
class Interval:
    """A point estimate and its percentile bootstrap interval.

    Examples
    --------
    >>> Interval(0.02, -0.01, 0.05).spans_zero, str(Interval(0.9, 0.85, 0.94))
    (True, '0.9000 [0.8500, 0.9400]')
    """

    estimate: float
    low: float
    high: float

    @property
    def spans_zero(self) -> bool:
        """Whether 0 lies in the interval (a difference then within noise)."""
        return self.low <= 0.0 <= self.high

    def __str__(self) -> str:
        return f"{self.estimate:.4f} [{self.low:.4f}, {self.high:.4f}]"

    def signed(self) -> str:
        """The interval with signs, for differences."""
        return f"{self.estimate:+.4f} [{self.low:+.4f}, {self.high:+.4f}]"

    def to_json(self) -> dict[str, float]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high}


@dataclass(frozen=True)
class McNemar:
    """McNemar's exact test of two models on the same images.

    Attributes
    ----------
    only_first, only_second : int
        Images only the first (only the second) model labels correctly.
    p_value : float
        Two-sided exact p-value (1.0 when no image is discordant).
    """

    only_first: int
    only_second: int
    p_value: float


def mcnemar_exact(first_correct: np.ndarray, second_correct: np.ndarray) -> McNemar:
    """McNemar's exact test on two models' per-image correctness.

    Examples
    --------
    >>> t = mcnemar_exact(np.array([1, 1, 1, 0, 1], bool), np.array([0, 0, 1, 0, 1], bool))
    >>> t.only_first, t.only_second, round(t.p_value, 4)
    (2, 0, 0.5)
    """
    from scipy.stats import binomtest

    first, second = np.asarray(first_correct, bool), np.asarray(second_correct, bool)
    b, c = int(np.sum(first & ~second)), int(np.sum(~first & second))
    p = binomtest(min(b, c), b + c, 0.5).pvalue if b + c else 1.0
    return McNemar(b, c, float(min(1.0, p)))


def resample_counts(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """How often each of ``n`` rows is drawn in each resample, ``CHUNK`` resamples at a time
    (``(chunk, n)`` counts, each row summing to ``n``); the same for a seed.

    Examples
    --------
    >>> counts = np.concatenate(list(resample_counts(5, 3, seed=0)))
    >>> counts.shape, counts.sum(axis=1).tolist()
    ((3, 5), [5.0, 5.0, 5.0])
    """
    rng = np.random.default_rng(seed)
    for start in range(0, resamples, CHUNK):
        size = min(CHUNK, resamples - start)
        drawn = rng.integers(0, n, size=(size, n)) + n * np.arange(size)[:, None]
        yield np.bincount(drawn.ravel(), minlength=size * n).reshape(size, n).astype(np.float64)


def resampled_scores(counts: np.ndarray, y: np.ndarray, predicted: np.ndarray,
                     n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy and macro F1 of each resample (a row of ``counts``), macro F1 over the classes
    that resample has among its labels or predictions, as scikit-learn's ``f1_score(...,
    average="macro", zero_division=0)`` computes it.

    Examples
    --------
    >>> y, predicted = np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])
    >>> accuracy, macro = resampled_scores(np.array([[1.0, 1, 1, 1], [2, 0, 2, 0]]), y, predicted, 2)
    >>> accuracy.tolist(), np.round(macro, 4).tolist()
    ([0.75, 1.0], [0.7333, 1.0])
    """
    correct = (y == predicted).astype(np.float64)
    accuracy = counts @ correct / counts.sum(axis=1)
    true = np.eye(n_classes)[y]
    guessed = np.eye(n_classes)[predicted]
    hits = counts @ (true * correct[:, None])
    size = counts @ true + counts @ guessed  # 2 TP + FP + FN of each class
    present = size > 0
    f1 = np.divide(2 * hits, size, out=np.zeros_like(hits), where=present)
    return accuracy, f1.sum(axis=1) / present.sum(axis=1)


def _interval(estimate: float, values: np.ndarray) -> Interval:
    tail = 100 * (1 - LEVEL) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return Interval(float(estimate), float(low), float(high))


@dataclass(frozen=True)
class ModelIntervals:
    """One model's accuracy and macro F1 on the test rows with their bootstrap intervals."""

    accuracy: Interval
    macro_f1: Interval

    def to_json(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy.to_json(), "macro_f1": self.macro_f1.to_json()}


@dataclass(frozen=True)
class PairedComparison:
    """Two models on the same test rows: McNemar's test and the intervals of the second's
    accuracy and macro F1 minus the first's (:meth:`ModelResult.compare
    <classify.ModelResult.compare>`)."""

    first: str
    second: str
    mcnemar: McNemar
    accuracy_difference: Interval
    macro_f1_difference: Interval

    def verdict(self) -> str:
        """The difference in words: within noise where its interval spans 0."""
        parts = []
        for metric, diff in (("accuracy", self.accuracy_difference), ("macro F1", self.macro_f1_difference)):
            if diff.spans_zero:
                parts.append(f"{metric} within noise")
            else:
                parts.append(f"{metric}: {self.second if diff.estimate > 0 else self.first} better")
        return "; ".join(parts)

    def describe(self) -> str:
        """One line: discordant counts, p-value, differences and the verdict.

        Examples
        --------
        >>> pair = PairedComparison("logreg", "head", McNemar(12, 19, 0.281),
        ...                         Interval(0.0206, -0.0088, 0.05), Interval(0.02, -0.01, 0.05))
        >>> print(pair.describe())
        head - logreg: 12 images only logreg got right, 19 only head; McNemar p = 0.2810; accuracy +0.0206 [-0.0088, +0.0500], macro F1 +0.0200 [-0.0100, +0.0500]: accuracy within noise; macro F1 within noise
        """  # noqa: E501 - the line as printed
        m = self.mcnemar
        return (f"{self.second} - {self.first}: {m.only_first} image{'s' * (m.only_first != 1)} only "
                f"{self.first} got right, {m.only_second} only {self.second}; McNemar p = {m.p_value:.4f}; "
                f"accuracy {self.accuracy_difference.signed()}, "
                f"macro F1 {self.macro_f1_difference.signed()}: {self.verdict()}")

    def to_json(self) -> dict[str, Any]:
        return {"first": self.first, "second": self.second,
                "mcnemar": {"only_first": self.mcnemar.only_first, "only_second": self.mcnemar.only_second,
                            "p_value": self.mcnemar.p_value},
                "accuracy_difference": self.accuracy_difference.to_json(),
                "macro_f1_difference": self.macro_f1_difference.to_json(),
                "within_noise": {"accuracy": self.accuracy_difference.spans_zero,
                                 "macro_f1": self.macro_f1_difference.spans_zero}}


@dataclass(frozen=True)
class Significance:
    """Every model's intervals and every pair's comparison on the same test rows
    (:func:`paired_significance`)."""

    intervals: dict[str, ModelIntervals]
    pairs: list[PairedComparison]
    resamples: int
    seed: int
    images: int

    def table(self) -> str:
        """The text printed under a side-by-side table."""
        width = max(len(name) for name in self.intervals)
        lines = [f"on the same {self.images} test images, {LEVEL:.0%} bootstrap intervals "
                 f"({self.resamples:,} paired resamples, seed {self.seed}):"]
        lines += [f"  {name:{width}}  accuracy {iv.accuracy}  macro F1 {iv.macro_f1}"
                  for name, iv in self.intervals.items()]
        if self.pairs:
            lines.append("pairs (McNemar's exact test on the images one labels right, the other wrong):")
            lines += [f"  {pair.describe()}" for pair in self.pairs]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {"resamples": self.resamples, "seed": self.seed, "level": LEVEL, "test_images": self.images,
                "intervals": {name: iv.to_json() for name, iv in self.intervals.items()},
                "pairs": [pair.to_json() for pair in self.pairs]}


def paired_significance(y: np.ndarray, predictions: Mapping[str, np.ndarray], n_classes: int, *,
                        resamples: int = RESAMPLES, seed: int = 42,
                        groups: np.ndarray | None = None) -> Significance:
    """Intervals of each model's accuracy and macro F1 and, for every pair, McNemar's exact test
    and the intervals of the differences, all on the same resamples of the test rows.

    Parameters
    ----------
    y : ndarray of int
        The test rows' true labels.
    predictions : dict of str to ndarray of int
        Each model's labels for the same rows, by name (pairs in this order: later minus earlier).
    n_classes : int
        How many classes the labels index.
    resamples, seed : int
        Bootstrap resamples and their seed (the same seed, the same intervals).
    groups : ndarray, optional
        The image of each row, where an image has several rows (test sets that overlap): the
        bootstrap then draws images, each with all its rows.

    Examples
    --------
    >>> y = np.array([0, 1, 1, 0, 1, 0, 1, 1])
    >>> s = paired_significance(y, {"a": y, "b": np.array([0, 1, 0, 0, 1, 1, 1, 1])}, 2, resamples=200)
    >>> s.intervals["a"].accuracy.estimate, s.pairs[0].mcnemar
    (1.0, McNemar(only_first=2, only_second=0, p_value=0.5))
    """
    from sklearn.metrics import f1_score

    y = np.asarray(y)
    names = list(predictions)
    preds = {name: np.asarray(predictions[name]) for name in names}
    draws: dict[str, tuple[list, list]] = {name: ([], []) for name in names}
    # With groups, whole images are drawn: each carries every row it has (its appearances in
    # overlapping test sets), so the intervals do not count one image as several.
    group_ids = None if groups is None else np.unique(np.asarray(groups), return_inverse=True)[1]
    units = len(y) if group_ids is None else int(group_ids.max()) + 1
    for drawn in resample_counts(units, resamples, seed):
        counts = drawn if group_ids is None else drawn[:, group_ids]
        for name in names:
            accuracy, macro = resampled_scores(counts, y, preds[name], n_classes)
            draws[name][0].append(accuracy)
            draws[name][1].append(macro)
    scores = {name: (np.concatenate(a), np.concatenate(f)) for name, (a, f) in draws.items()}
    point = {name: (float(np.mean(y == preds[name])),
                    float(f1_score(y, preds[name], average="macro", zero_division=0))) for name in names}
    intervals = {name: ModelIntervals(_interval(point[name][0], scores[name][0]),
                                      _interval(point[name][1], scores[name][1])) for name in names}
    pairs = [PairedComparison(
        first, second, mcnemar_exact(y == preds[first], y == preds[second]),
        _interval(point[second][0] - point[first][0], scores[second][0] - scores[first][0]),
        _interval(point[second][1] - point[first][1], scores[second][1] - scores[first][1]),
    ) for first, second in combinations(names, 2)]
    return Significance(intervals, pairs, resamples, seed, len(y))
