"""Named evaluation metrics, computed by scikit-learn once over every example of an evaluation.

An evaluator (``torch_client.evaluate_model``) keeps what the chosen metrics need of each
batch (``MetricSet.keep``: the predicted class, the class scores for ROC-AUC, the
regression outputs) and ``MetricSet.measure`` computes them over the whole set at once, so
a value does not depend on how the set was batched.

Classification: ``accuracy``, ``precision``, ``recall``, ``f1`` (two classes: of class 1;
more: the macro mean over the classes present), ``roc_auc`` (two classes: class 1's
softmax score; more: macro one-vs-rest) and ``confusion_matrix``. Regression: ``mse``,
``mae``, ``r2`` (each the uniform mean over outputs, scikit-learn's default). A value that
is undefined on the data (ROC-AUC with one class present, R^2 of one example, anything of
non-finite outputs) is NaN, and ``report`` leaves it out of the round's record.

Combining participants exactly (``combine``)
--------------------------------------------
Beside its values, a measurement holds *statistics* (keys under ``cm/``, ``roc/``,
``r2/``) that add up over participants to the pooled evaluation's:

- ``cm/i/j``: examples of class i predicted as j, every cell. The summed matrix is the
  pooled one; precision, recall, F1 and the confusion matrix come from it exactly
  (scikit-learn with the counts as sample weights).
- ``r2/n`` and per output k ``r2/sum/k``, ``r2/sumsq/k``, ``r2/sse/k``: the pooled total
  and residual sums of squares, hence R^2 exactly (but for float64 cancellation in
  ``sumsq - sum**2 / n`` when the targets' mean is ~1e6 times their spread).
- ``roc/c/pos/b``, ``roc/c/neg/b``: nonzero bins of histograms of class c's log-odds
  (clipped to +-16, 1024 equal bins of width 1/32) over the examples of class c and of
  the others (two classes: class 1 only). ROC-AUC from the summed histograms orders every
  (positive, negative) pair exactly except pairs in the same bin, which count as ties
  (half a correctly ordered pair): it is off by at most half the fraction of such pairs.

Accuracy, MSE and MAE are means over examples, so their example-weighted mean is already
exact; any other key (an LLM's perplexity) is combined as that mean, as before.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

Kind = Literal["classification", "regression"]
Stats = dict[str, float]
Entry = float | list[list[int]]  # a value of the round's record: a metric or a matrix

_BINS = 1024  # ROC-AUC histogram bins over the clipped log-odds
_LOGIT = 16.0  # log-odds beyond +-16 (scores within 1e-7 of 0 or 1) share the end bins
_STATS = ("cm/", "roc/", "r2/")


@dataclass(frozen=True)
class Pooled:
    """What one evaluation kept of its examples (N of them), as numpy arrays."""

    targets: npt.NDArray[Any]  # (N,) class indices, or (N, outputs) regression targets
    predicted: npt.NDArray[Any]  # (N,) argmax class, or (N, outputs) regression outputs
    scores: npt.NDArray[np.float64] | None  # (N, C) softmax, kept only for roc_auc
    classes: int  # C, the width of the model's output; 0 for a regression

    @staticmethod
    def cat(parts: Sequence[Pooled]) -> Pooled:
        """The batches of one evaluation as one set."""
        first = parts[0]
        scores = [p.scores for p in parts if p.scores is not None]
        return Pooled(
            np.concatenate([p.targets for p in parts]),
            np.concatenate([p.predicted for p in parts]),
            np.concatenate(scores) if scores else None,
            first.classes,
        )


@dataclass(frozen=True)
class Metric:
    """A named metric: its value on pooled examples and, where a weighted mean of the
    participants' values would not be exact, the statistics that combine exactly."""

    kind: Kind
    value: Callable[[Pooled], float]
    statistics: Callable[[Pooled], Stats] | None = None  # what participants sum
    from_statistics: Callable[[Mapping[str, float]], float] | None = None  # the pooled value


# --- classification -----------------------------------------------------------------------


def _averaging(classes: int) -> dict[str, Any]:
    if classes == 2:
        return {"average": "binary", "pos_label": 1, "zero_division": 0}
    return {"average": "macro", "zero_division": 0}


def _accuracy(p: Pooled) -> float:
    from sklearn.metrics import accuracy_score  # deferred: slow to import

    return float(accuracy_score(p.targets, p.predicted))


def _confusion(p: Pooled) -> Stats:
    from sklearn.metrics import confusion_matrix

    cm = confusion_matrix(p.targets, p.predicted, labels=np.arange(p.classes))  # (C, C)
    return {f"cm/{i}/{j}": float(cm[i, j]) for i in range(p.classes) for j in range(p.classes)}


def matrix(stats: Mapping[str, float]) -> npt.NDArray[np.float64]:
    """The (C, C) confusion matrix held in ``stats``' ``cm/i/j`` keys (rows: true class)."""
    cells = {k: v for k, v in stats.items() if k.startswith("cm/")}
    c = math.isqrt(len(cells))
    m = np.zeros((c, c))
    for k, v in cells.items():
        i, j = (int(s) for s in k.split("/")[1:])
        if not (0 <= i < c and 0 <= j < c) or not (math.isfinite(v) and v >= 0):
            raise ValueError(f"not a cell of a {c}x{c} confusion matrix: {k}={v}")
        m[i, j] = v
    if c == 0 or len(cells) != c * c:
        raise ValueError(f"{len(cells)} confusion-matrix cells do not make a square matrix")
    return m


def _weighted(score: Callable[..., Any]) -> Callable[[Mapping[str, float]], float]:
    """``score`` (a scikit-learn label metric) of the pooled examples, from the summed
    confusion matrix: each nonzero cell (i, j) stands for its count of examples."""

    def pooled(stats: Mapping[str, float]) -> float:
        m = matrix(stats)
        i, j = np.nonzero(m)
        return float(score(i, j, sample_weight=m[i, j], **_averaging(len(m))))

    return pooled


def _label_metric(score: Callable[..., Any]) -> Metric:
    return Metric(
        "classification",
        lambda p: float(score(p.targets, p.predicted, **_averaging(p.classes))),
        _confusion,
        _weighted(score),
    )


def _sklearn(name: str) -> Callable[..., Any]:
    def call(*args: Any, **kw: Any) -> Any:
        import sklearn.metrics

        return getattr(sklearn.metrics, name)(*args, **kw)

    return call


def _scored(p: Pooled) -> list[int]:
    """The classes whose score ROC-AUC ranks: class 1 of two, else every class."""
    return [1] if p.classes == 2 else list(range(p.classes))


def _roc_auc(p: Pooled) -> float:
    from sklearn.metrics import roc_auc_score

    assert p.scores is not None  # keep() keeps scores whenever roc_auc is asked for
    present = np.unique(p.targets)
    if len(present) < (2 if p.classes == 2 else p.classes) or not np.isfinite(p.scores).all():
        return math.nan  # a class without examples (or all of them): undefined
    if p.classes == 2:
        return float(roc_auc_score(p.targets, p.scores[:, 1]))
    s = p.scores / p.scores.sum(axis=1, keepdims=True)  # scikit-learn checks rows sum to 1
    labels = np.arange(p.classes)
    return float(roc_auc_score(p.targets, s, multi_class="ovr", average="macro", labels=labels))


def _histograms(p: Pooled) -> Stats:
    assert p.scores is not None
    with np.errstate(divide="ignore", invalid="ignore"):
        odds = np.log(p.scores) - np.log1p(-p.scores)  # (N, C), +-inf where saturated
    odds = np.clip(np.nan_to_num(odds, nan=0.0), -_LOGIT, _LOGIT)
    bins = np.minimum(((odds + _LOGIT) * (_BINS / (2 * _LOGIT))).astype(np.int64), _BINS - 1)
    out: Stats = {}
    for c in _scored(p):
        positive = p.targets == c
        for side, rows in (("pos", positive), ("neg", ~positive)):
            counts = np.bincount(bins[rows, c], minlength=_BINS)
            for b in np.nonzero(counts)[0]:
                out[f"roc/{c}/{side}/{b}"] = float(counts[b])
    return out


def _roc_auc_from_histograms(stats: Mapping[str, float]) -> float:
    from sklearn.metrics import roc_auc_score

    per: dict[int, dict[str, list[tuple[int, float]]]] = {}
    for k, v in stats.items():
        if k.startswith("roc/"):
            _, c, side, b = k.split("/")
            per.setdefault(int(c), {"pos": [], "neg": []})[side].append((int(b), v))
    aucs = []
    for sides in per.values():
        if not sides["pos"] or not sides["neg"]:
            return math.nan  # no example of the class, or no other: undefined
        bins = [b for b, _ in sides["pos"]] + [b for b, _ in sides["neg"]]
        truth = [1] * len(sides["pos"]) + [0] * len(sides["neg"])
        counts = [n for _, n in sides["pos"]] + [n for _, n in sides["neg"]]
        aucs.append(float(roc_auc_score(truth, bins, sample_weight=counts)))
    return float(np.mean(aucs)) if aucs else math.nan  # macro: classes weigh the same


# --- regression ---------------------------------------------------------------------------


def _regression(score: Callable[..., Any], least: int = 1) -> Callable[[Pooled], float]:
    def value(p: Pooled) -> float:
        if len(p.targets) < least or not np.isfinite(p.predicted).all():
            return math.nan
        return float(score(p.targets, p.predicted))

    return value


def _moments(p: Pooled) -> Stats:
    y, f = p.targets, p.predicted  # (N, outputs)
    out: Stats = {"r2/n": float(len(y))}
    for k in range(y.shape[1]):
        out[f"r2/sum/{k}"] = float(y[:, k].sum())
        out[f"r2/sumsq/{k}"] = float(np.square(y[:, k]).sum())
        out[f"r2/sse/{k}"] = float(np.square(y[:, k] - f[:, k]).sum())
    return out


def _r2_from_moments(stats: Mapping[str, float]) -> float:
    """R^2 = 1 - SSE / SST per output, uniformly averaged: scikit-learn's ``r2_score`` (with
    its ``force_finite`` rule for constant targets), which cannot take sums instead of
    examples, on the pooled sums of squares."""
    n = stats["r2/n"]
    outputs = sum(1 for k in stats if k.startswith("r2/sse/"))
    if n < 2 or outputs == 0:
        return math.nan
    scores = []
    for k in range(outputs):
        sse = stats[f"r2/sse/{k}"]
        sst = stats[f"r2/sumsq/{k}"] - stats[f"r2/sum/{k}"] ** 2 / n
        scores.append(1.0 - sse / sst if sst > 0 else (1.0 if sse == 0 else 0.0))
    return float(np.mean(scores))


# --- the named metrics --------------------------------------------------------------------

METRICS: dict[str, Metric] = {
    "accuracy": Metric("classification", _accuracy),
    "precision": _label_metric(_sklearn("precision_score")),
    "recall": _label_metric(_sklearn("recall_score")),
    "f1": _label_metric(_sklearn("f1_score")),
    "roc_auc": Metric("classification", _roc_auc, _histograms, _roc_auc_from_histograms),
    # its value is the number of classes; the matrix itself is the cm/ statistics
    "confusion_matrix": Metric(
        "classification", lambda p: float(p.classes), _confusion, lambda s: float(len(matrix(s)))
    ),
    "mse": Metric("regression", _regression(_sklearn("mean_squared_error"))),
    "mae": Metric("regression", _regression(_sklearn("mean_absolute_error"))),
    "r2": Metric("regression", _regression(_sklearn("r2_score"), 2), _moments, _r2_from_moments),
}


def names(kind: Kind) -> list[str]:
    """The metrics a task of ``kind`` can report."""
    return [n for n, m in METRICS.items() if m.kind == kind]


@dataclass(frozen=True)
class MetricSet:
    """The metrics one task's evaluations report, by name (``names(kind)``)."""

    kind: Kind
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        allowed = names(self.kind)
        for n in self.names:
            if n not in allowed:
                what = f"a {METRICS[n].kind} metric" if n in METRICS else "not a metric"
                raise ValueError(
                    f"{n!r} is {what}; a {self.kind} task allows: {', '.join(allowed)}"
                )
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"metrics named twice: {list(self.names)}")

    def keep(self, out: Tensor, y: Tensor) -> Pooled:
        """What the metrics need of one batch: model outputs ``out`` for targets ``y``."""
        if self.kind == "regression":
            pred = out.detach().cpu().reshape(len(out), -1).double().numpy()  # (B, outputs)
            return Pooled(y.cpu().reshape(len(y), -1).double().numpy(), pred, None, 0)
        logits = out.detach().cpu().reshape(-1, out.shape[-1])  # (B, C), or (B*T, C) per token
        scores = None
        if "roc_auc" in self.names:
            scores = torch.softmax(logits.double(), dim=-1).numpy()
        targets = y.cpu().reshape(-1).numpy()
        return Pooled(targets, logits.argmax(dim=-1).numpy(), scores, logits.shape[-1])

    def measure(self, pooled: Pooled) -> Stats:
        """Every named value over ``pooled``, and the statistics that combine them."""
        out: Stats = {}
        for n in self.names:
            metric = METRICS[n]
            out[n] = metric.value(pooled)
            if metric.statistics is not None:
                out.update(metric.statistics(pooled))
        return out


def _is_statistic(key: str) -> bool:
    return key.startswith(_STATS)


def combine(results: Sequence[tuple[int, Mapping[str, float]]]) -> Stats:
    """Participants' ``(examples, metrics)`` as one evaluation over all their examples:
    statistics summed, a metric that has them recomputed from the sums (exactly; ROC-AUC
    up to its bins), any other value the example-weighted mean. A metric whose sums do not
    fit together (a participant sent a malformed matrix) is NaN."""
    total = sum(n for n, _ in results)
    sums: Stats = {}
    weighted: Stats = {}
    for n, metrics in results:
        for k, v in metrics.items():
            if _is_statistic(k):
                sums[k] = sums.get(k, 0.0) + float(v)
            else:
                weighted[k] = weighted.get(k, 0.0) + float(v) * n
    out = {k: v / total for k, v in weighted.items()} if total else {}
    for k in out:
        metric = METRICS.get(k)
        if metric is not None and metric.from_statistics is not None:
            try:
                out[k] = metric.from_statistics(sums)
            except (ValueError, KeyError):
                out[k] = math.nan
    return {**out, **sums}


def report(metrics: Mapping[str, float]) -> dict[str, Entry]:
    """What a round's record shows of one evaluation: the metrics' values (NaN ones left
    out), the confusion matrix as rows of counts where it was asked for, no statistics."""
    out: dict[str, Entry] = {
        k: float(v) for k, v in metrics.items() if not _is_statistic(k) and not math.isnan(v)
    }
    if "confusion_matrix" in out:
        out["confusion_matrix"] = matrix(metrics).astype(np.int64).tolist()
    return out


__all__ = ["METRICS", "Metric", "MetricSet", "Pooled", "combine", "matrix", "names", "report"]
