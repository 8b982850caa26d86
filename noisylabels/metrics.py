"""Measured quantities of a selection or a prediction (numpy only): per-sample
cross-entropy, label precision / recall (arXiv:1905.05040, sec. 2, Def. 1) and the
row-normalised confusion matrix that the theory compares with the transition matrix T."""

import numpy as np


def cross_entropy(probs, labels, eps=1e-12):
    """Per-sample cross-entropy -log p[label]; probs (n, c), labels (n,) -> (n,)."""
    return -np.log(np.clip(probs[np.arange(len(labels)), labels], eps, None))


def selection_metrics(y_true, y_noisy, selected):
    """Label precision / recall of a selection (arXiv:1905.05040 sec. 2).

    LP = fraction of selected samples whose noisy label is correct; LR = fraction of the
    correctly-labelled samples that were selected. NaN where undefined (empty sets).
    """
    clean = np.asarray(y_true) == np.asarray(y_noisy)
    selected = np.asarray(selected, bool)
    n_sel, n_clean = selected.sum(), clean.sum()
    tp = (selected & clean).sum()
    return {"label_precision": float(tp / n_sel) if n_sel else float("nan"),
            "label_recall": float(tp / n_clean) if n_clean else float("nan"),
            "selected": int(n_sel)}


def normalized_confusion(y_true, y_pred, num_classes):
    """Row-normalised confusion matrix (rows: true label, columns: prediction), (c, c)."""
    from sklearn.metrics import confusion_matrix

    m = confusion_matrix(y_true, y_pred, labels=np.arange(num_classes)).astype(np.float64)
    rows = m.sum(axis=1, keepdims=True)
    return np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)


def top_k_accuracy(probs, labels, k=5):
    """Fraction of samples whose label is among the k most probable classes (ties broken by
    class index, stably); probs (n, c), labels (n,) -> float."""
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return float((top == np.asarray(labels)[:, None]).any(1).mean())
