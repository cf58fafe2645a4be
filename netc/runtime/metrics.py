"""Classification figures beyond accuracy: per class from a confusion matrix [true, predicted]
(precision, recall, F1, support, and their macro averages: scikit-learn's definitions; a class never
predicted, or never present, scores 0 where the ratio has no denominator, as zero_division=0), and
top-k accuracy from the scores."""

from __future__ import annotations

import numpy as np


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    out = np.zeros(len(numerator))
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def per_class(confusion: np.ndarray) -> dict:
    """{"classes": [{class, precision, recall, f1, support}, ...], "macro": {precision, recall, f1}}."""
    confusion = np.asarray(confusion, dtype=np.float64)
    hits = np.diag(confusion)
    precision = _ratio(hits, confusion.sum(axis=0))
    recall = _ratio(hits, confusion.sum(axis=1))
    f1 = _ratio(2 * precision * recall, precision + recall)
    support = confusion.sum(axis=1).astype(int)
    classes = [{"class": i, "precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                "support": int(support[i])} for i in range(len(confusion))]
    macro = {"precision": float(precision.mean()), "recall": float(recall.mean()), "f1": float(f1.mean())}
    return {"classes": classes, "macro": macro}


def top_k_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """The share of samples whose class is among the k highest scores (Keras's top_k_categorical_accuracy;
    ties resolved as scikit-learn's top_k_accuracy_score: a tied class of a higher index ranks first)."""
    labels = np.asarray(labels)
    scores = np.asarray(scores).reshape(labels.size, -1)  # labels [N, T] (one at every step): a row per step
    order = np.argsort(scores, axis=1, kind="mergesort")[:, ::-1][:, :k]
    return float(np.mean(np.any(order == labels.reshape(-1)[:, None], axis=1)))
