"""Clean-sample selectors and noise estimates on out-of-sample probabilities.

Every function here takes ``probs`` (n, c), each row predicted by a network that did not
train on that sample (e.g. the two halves of a 2-fold cross-validation round, INCV's first
iteration in arXiv:1905.05040, sec. 3), and the noisy labels, and returns boolean masks
and estimates; no Keras, so each is testable on scripted probabilities.

Selectors (the set S is trusted, the set C is left to Co-teaching's second phase):

- :func:`select_ncv`, the plain noisy-cross-validation rule, the starting point of the
  paper's sec. 3: S = samples whose prediction equals their label; e estimated by inverting
  the paper's accuracy formula (sec. 2, Prop. 1), as INCV does.
- :func:`select_cl`, confident learning (Northcutt et al., JAIR 2021) through cleanlab:
  ``cleanlab.filter.find_label_issues`` flags C, the rest is S; e is cleanlab's estimated
  fraction of label issues (``cleanlab.count.num_label_issues`` with
  ``estimation_method="off_diagonal_calibrated"``, i.e. 1 - trace of the calibrated
  confident joint).

:func:`noise_estimates` puts both noise estimates side by side (with the actual ratio and
the empirical T when clean labels are known).
"""

import numpy as np

from . import metrics, noise, utils
from .data import split_halves

# cleanlab's estimator of the fraction of label issues used everywhere here: 1 - trace of
# the confident joint calibrated to the given labels' class counts (the one cleanlab's docs
# recommend "to get the most accurate estimate of the number of label issues").
CL_ESTIMATION_METHOD = "off_diagonal_calibrated"


def check_probs(probs, y_noisy, num_classes):
    """``probs`` as a float64 (n, c) array matching ``y_noisy``; explicit ValueErrors."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y_noisy)
    if p.ndim != 2 or p.shape[1] != num_classes:
        raise ValueError(f"probs must have shape (n, {num_classes}), got {p.shape}")
    if y.shape != (p.shape[0],):
        raise ValueError(f"y_noisy must have shape ({p.shape[0]},), got {y.shape}")
    if not np.isfinite(p).all():
        raise ValueError("probs has NaN or inf rows: every sample needs an out-of-sample "
                         "prediction (train both folds)")
    return p, y.astype(np.int64)


def cross_validation_probs(train_fn, n, num_classes, *, seed):
    """One 2-fold noisy cross-validation round: out-of-sample probabilities for all n.

    The halves are INCV's first-iteration halves (``utils.rng_for(seed,
    "incv-iteration-1")``), so with the same ``train_fn`` the result equals INCV's
    ``oos_probs``: every selector judges the same predictions.

    Parameters
    ----------
    train_fn : callable (train_idx, held_idx, keep_best, tag) -> (len(held_idx), c) probs
        As for :func:`incv.incv_select` (e.g. ``incv.make_incv_train_fn``); called twice,
        with ``keep_best=True`` as in INCV's first iteration.

    Returns
    -------
    (n, c) float32
        Row i predicted by the run that trained on the other half.
    """
    halves = split_halves(np.arange(n), rng=utils.rng_for(seed, "incv-iteration-1"))
    probs = np.full((n, num_classes), np.nan, np.float32)
    for h, (fit, held) in enumerate(((halves[0], halves[1]), (halves[1], halves[0]))):
        probs[held] = train_fn(fit, held, True, f"cross-validation-half{h + 1}")
    return probs


def select_ncv(probs, y_noisy, *, num_classes):
    """The noisy-cross-validation rule: S = {prediction == noisy label}, C = the rest.

    Parameters
    ----------
    probs : (n, c) float
        Out-of-sample probabilities.
    y_noisy : (n,) int

    Returns
    -------
    dict
        ``selected``, ``candidate`` (n,) bool (complements), ``eval_ratio``: the paper's
        estimate of the noise ratio from the held-out accuracy w.r.t. noisy labels.
    """
    p, y = check_probs(probs, y_noisy, num_classes)
    hit = p.argmax(1) == y
    return {"selected": hit, "candidate": ~hit,
            "eval_ratio": noise.estimate_noise_ratio(float(hit.mean()), num_classes)}


def cl_noise_matrix(probs, y_noisy, *, num_classes):
    """Confident learning's estimated noise: the rate and the matrix P(noisy | true).

    Returns
    -------
    rate : float
        ``num_label_issues(..., estimation_method="off_diagonal_calibrated") / n``.
    matrix : (c, c) float
        ``matrix[i, j]`` = estimated P(noisy = j | true = i), the paper's T convention: the
        calibrated confident joint (``cleanlab.count.estimate_joint``, P(noisy = i,
        true = j)) transposed and row-normalised (cleanlab's own ``noise_matrix`` is its
        column-normalised transpose). A true class nobody is confidently counted into
        gets a row of NaN.
    """
    from cleanlab.count import estimate_joint, num_label_issues

    p, y = check_probs(probs, y_noisy, num_classes)
    joint = estimate_joint(y, p).T  # rows: true class, columns: noisy label
    mass = joint.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        matrix = np.where(mass > 0, joint / mass, np.nan)
    rate = num_label_issues(y, p, estimation_method=CL_ESTIMATION_METHOD) / len(y)
    return float(rate), matrix


def select_cl(probs, y_noisy, *, num_classes, filter_by="prune_by_noise_rate"):
    """Confident learning: C = ``cleanlab.filter.find_label_issues``, S = the rest.

    Parameters
    ----------
    probs : (n, c) float
        Out-of-sample probabilities.
    y_noisy : (n,) int
    filter_by : str
        cleanlab's rule (its default, ``"prune_by_noise_rate"``).

    Returns
    -------
    dict
        ``selected``, ``candidate`` (n,) bool (complements), ``eval_ratio``: cleanlab's
        estimated fraction of label issues, ``noise_matrix`` (c, c): see
        :func:`cl_noise_matrix`.
    """
    from cleanlab.filter import find_label_issues

    p, y = check_probs(probs, y_noisy, num_classes)
    # n_jobs=1: cleanlab otherwise forks one process per core.
    issues = np.asarray(find_label_issues(y, p, filter_by=filter_by, n_jobs=1), bool)
    rate, matrix = cl_noise_matrix(p, y, num_classes=num_classes)
    return {"selected": ~issues, "candidate": issues, "eval_ratio": rate,
            "noise_matrix": matrix}


SELECTORS = {"ncv": select_ncv, "cl": select_cl}

# Every estimate of the noise ratio e that a run can record, one name each, and what it is
# computed from. A summary's ``estimated_noise_ratio`` is the e its method used (for e_S and
# the warm-up), and ``estimated_noise_ratio_is`` names which of these it is;
# ``noise_estimates`` holds those the run's out-of-sample probabilities give.
ESTIMATES = {
    "incv_first_half": "the paper's formula (sec. 2) on the held-out accuracy of INCV's "
                       "first run only (iteration 1, first half: n/2 samples), as the "
                       "authors' INCV.py; INCV's e",
    "held_out_formula": "the paper's formula on the held-out accuracy of the run's "
                        "out-of-sample predictions: incv_train.py's one 2-fold round (both "
                        "halves, all n samples; the noisy-CV rule's e), noisy_cv.py's "
                        "held-out half (both halves with --folds 2)",
    "coteaching_half_run": "the paper's formula on one network trained on a random half "
                           "of the noisy set and tested on the other (n/2 samples); plain "
                           "Co-teaching's forget rate",
    "confident_learning": "cleanlab's estimated number of label issues / n on one 2-fold "
                          "round's out-of-sample probabilities; confident learning's e",
    "incv_results_csv": "the eval_ratio column of the --incv_results CSV (INCV's e when "
                        "the CSV came from incv_train.py)",
}
# The estimate each one-round selector uses as its e.
ESTIMATE_OF = {"ncv": "held_out_formula", "cl": "confident_learning"}


def noise_estimates(probs, y_noisy, *, num_classes, y_true=None):
    """Every noise estimate that out-of-sample probabilities give, side by side.

    Returns
    -------
    dict
        ``held_out_formula``: the paper's formula (held-out accuracy w.r.t. the noisy labels
        put into the inverted sym accuracy formula, sec. 2) on ``probs`` (see
        :data:`ESTIMATES`), ``confident_learning``: cleanlab's
        estimated fraction of label issues, ``cl_noise_matrix`` (c, c) its P(noisy | true),
        ``held_out_noisy_accuracy``; with ``y_true`` also ``actual`` (the noise ratio),
        ``empirical_T`` (c, c) P(noisy = j | true = i), ``confusion`` M (c, c)
        P(prediction = j | true = i), and the distances of M and of the CL matrix to the
        empirical T (``*_to_T_mad``: mean absolute difference over the c x c entries,
        ``*_to_T_fro``: Frobenius norm of the difference; a NaN row of the CL matrix counts
        as a difference of 1). Where cleanlab refuses the input (e.g. a single given
        class) ``confident_learning`` and ``cl_noise_matrix`` are None and ``cl_error``
        says why.
    """
    p, y = check_probs(probs, y_noisy, num_classes)
    hit = p.argmax(1) == y
    out = {"held_out_formula": noise.estimate_noise_ratio(float(hit.mean()), num_classes),
           "held_out_noisy_accuracy": float(hit.mean())}
    try:
        rate, matrix = cl_noise_matrix(p, y, num_classes=num_classes)
    except ValueError as err:  # e.g. a single given class: a report, not a reason to fail
        rate, matrix = None, None
        out["cl_error"] = str(err)
    out.update(confident_learning=rate, cl_noise_matrix=matrix)
    if y_true is not None:
        yt = np.asarray(y_true)
        T = metrics.normalized_confusion(yt, y, num_classes)
        M = metrics.normalized_confusion(yt, p.argmax(1), num_classes)
        out.update(actual=noise.actual_noise_ratio(yt, y), empirical_T=T, confusion=M)
        for name, A in (("confusion", M), ("cl_noise_matrix", matrix)):
            if A is None:
                continue
            d = np.nan_to_num(np.asarray(A) - np.asarray(T), nan=1.0)
            out[f"{name}_to_T_mad"] = float(np.abs(d).mean())
            out[f"{name}_to_T_fro"] = float(np.linalg.norm(d))
    return out
