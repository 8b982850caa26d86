"""Synthetic label noise and the theory of noisy cross-validation (arXiv:1905.05040 sec. 2).

Two noise patterns, with c classes and noise ratio e; ``T[i, j] = P(noisy = j | true = i)``:

- ``"sym"``: a label keeps its class with probability 1-e, otherwise it moves to one of the
  c-1 *other* classes, each with probability e/(c-1). The actual noise rate is e (not
  e(c-1)/c as with "uniform over all c classes").
- ``"asym"``: the authors' pair flip; label i becomes (i+1) mod c with probability e.

Both have diagonal 1-e. A network trained to convergence on noisy labels reproduces the
noise on held-out data, P(pred = j | true = i) ~ T[i, j]. With class prior pi and a sample
selected as clean when its prediction equals its noisy label:

- held-out accuracy w.r.t. noisy labels  a  = sum_i pi_i sum_j T[i,j]^2
  (sym: (1-e)^2 + e^2/(c-1);  asym: (1-e)^2 + e^2)
- label precision of the selection      LP = sum_i pi_i T[i,i]^2 / a
- label recall of the selection         LR = sum_i pi_i T[i,i]^2 / sum_i pi_i T[i,i]  (= 1-e)
- noise ratio of the selection          e_S = 1 - LP = e^2 / (e^2 + k (1-e)^2),
  k = c-1 (sym) or 1 (asym)

The noise ratio is estimated by inverting the sym accuracy formula on [0, (c-1)/c].
"""

import math
import operator

import numpy as np

PATTERNS = ("sym", "asym")


# ----------------------------------------------------------------------------- validation
def _check_pattern(pattern):
    if pattern not in PATTERNS:
        raise ValueError(f"pattern must be one of {PATTERNS}, got {pattern!r}")
    return pattern


def _check_ratio(ratio):
    r = float(ratio)
    if not (math.isfinite(r) and 0.0 <= r <= 1.0):
        raise ValueError(f"ratio must be in [0, 1], got {ratio}")
    return r


def _check_num_classes(num_classes):
    try:
        c = operator.index(num_classes)
    except TypeError:
        raise ValueError(f"num_classes must be an integer, got {num_classes!r}") from None
    if c < 2:
        raise ValueError(f"num_classes must be >= 2, got {c}")
    return c


def _check_labels(labels, name="labels"):
    """Return ``labels`` as a 1-D int64 array (a copy when a cast is needed)."""
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {y.shape}")
    if np.issubdtype(y.dtype, np.floating):
        # Labels loaded from float files are fine as long as they hold whole numbers.
        bad = ~np.isfinite(y) | (y != np.round(y))
        if bad.any():
            raise ValueError(f"{name} must be integers, got non-integer value {y[bad][0]}")
    elif not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{name} must be integers, got dtype {y.dtype}")
    return y.astype(np.int64, copy=False)


def _check_T(T):
    T = np.asarray(T, dtype=np.float64)
    if T.ndim != 2 or T.shape[0] != T.shape[1]:
        raise ValueError(f"T must be a square 2-D matrix, got shape {T.shape}")
    _check_num_classes(T.shape[0])
    if not np.isfinite(T).all() or (T < 0).any():
        raise ValueError(f"T must have finite non-negative entries, got min {T.min()}")
    sums = T.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > 1e-6)
    if bad.size:
        raise ValueError(f"rows of T must sum to 1, row {bad[0]} sums to {sums[bad[0]]:.10g}")
    return T


def _check_prior(prior, c):
    """Uniform when None, else a non-negative length-c vector normalised to sum 1."""
    if prior is None:
        return np.full(c, 1.0 / c)
    p = np.asarray(prior, dtype=np.float64)
    if p.shape != (c,):
        raise ValueError(f"prior must have shape ({c},), got shape {p.shape}")
    if not np.isfinite(p).all() or (p < 0).any():
        raise ValueError(f"prior must be finite and non-negative, got {p.tolist()}")
    total = p.sum()
    if total <= 0:
        raise ValueError(f"prior must have a positive sum, got {total}")
    return p / total


# ---------------------------------------------------------------------------- noise model
def transition_matrix(pattern, ratio, num_classes):
    """Noise transition matrix of a pattern.

    Returns
    -------
    T : ndarray, shape (c, c), float64
        ``T[i, j] = P(noisy = j | true = i)``; rows sum to 1.
    """
    _check_pattern(pattern)
    e = _check_ratio(ratio)
    c = _check_num_classes(num_classes)
    if pattern == "sym":
        T = np.full((c, c), e / (c - 1))
    else:
        T = np.zeros((c, c))
        T[np.arange(c), (np.arange(c) + 1) % c] = e
    np.fill_diagonal(T, 1.0 - e)
    return T


def add_noise(labels, pattern, ratio, *, num_classes=None, seed=None):
    """Corrupt labels with noise distributed exactly as ``transition_matrix``.

    Parameters
    ----------
    labels : array-like of int, shape (n,)
        Clean labels in [0, num_classes). Never modified.
    pattern : {"sym", "asym"}
    ratio : float in [0, 1]
    num_classes : int >= 2, optional
        Defaults to ``labels.max() + 1``.
    seed : int, None or numpy.random.Generator
        Passed to ``np.random.default_rng``.

    Returns
    -------
    noisy : ndarray, shape (n,), int64
        A new array, even when ``ratio == 0``.
    """
    _check_pattern(pattern)
    e = _check_ratio(ratio)
    y = _check_labels(labels)
    if num_classes is None:
        if y.size == 0:
            raise ValueError("cannot infer num_classes from empty labels; pass num_classes")
        num_classes = int(y.max()) + 1
    c = _check_num_classes(num_classes)
    if y.size and (y.min() < 0 or y.max() >= c):
        bad = y[(y < 0) | (y >= c)][0]
        raise ValueError(f"labels must be in [0, {c}), got {bad}")

    rng = np.random.default_rng(seed)
    # Both draws are always made so a seed gives the same flip mask for either pattern.
    flip = rng.random(y.size) < e
    offset = rng.integers(1, c, size=y.size)  # uniform on 1..c-1: any class but the true one
    if pattern == "asym":
        offset = np.ones_like(offset)
    return np.where(flip, (y + offset) % c, y).astype(np.int64)


def actual_noise_ratio(y_true, y_noisy):
    """Fraction of labels that differ: ``mean(y_true != y_noisy)``."""
    a, b = _check_labels(y_true, "y_true"), _check_labels(y_noisy, "y_noisy")
    if a.shape != b.shape:
        raise ValueError(f"y_true and y_noisy must have the same shape, got {a.shape}, {b.shape}")
    if a.size == 0:
        raise ValueError("labels must not be empty")
    return float(np.mean(a != b))


# ---------------------------------------------------------------------------------- theory
def expected_accuracy(T, prior=None):
    """Held-out accuracy w.r.t. noisy labels, ``sum_i pi_i sum_j T[i,j]^2``.

    ``T`` has shape (c, c); ``prior`` shape (c,), uniform by default, normalised to sum 1.
    """
    T = _check_T(T)
    return float(_check_prior(prior, T.shape[0]) @ (T**2).sum(axis=1))


def expected_label_precision(T, prior=None):
    """Precision of the "pred == noisy label" selection, ``sum_i pi_i T[i,i]^2 / accuracy``.

    The denominator is never 0 for a valid T: each row has squared sum >= 1/c.
    """
    T = _check_T(T)
    p = _check_prior(prior, T.shape[0])
    return float(p @ np.diag(T) ** 2 / (p @ (T**2).sum(axis=1)))


def expected_label_recall(T, prior=None):
    """Recall of the selection, ``sum_i pi_i T[i,i]^2 / sum_i pi_i T[i,i]`` (1-e for both patterns).

    Returns NaN when no sample keeps its true label (e.g. e = 1): there are no clean
    samples to recall, so recall is undefined. Plotting code should skip NaN points.
    """
    T = _check_T(T)
    p = _check_prior(prior, T.shape[0])
    d = np.diag(T)
    clean = p @ d
    return float(p @ d**2 / clean) if clean > 0 else float("nan")


def expected_noise_of_selected(ratio, pattern, num_classes):
    """Noise ratio of the selection, ``e_S = e^2 / (e^2 + k (1-e)^2)``, k = c-1 (sym) or 1 (asym).

    Equals 1 - LP. The denominator is positive for every e in [0, 1] (k >= 1), so e = 0 gives 0.
    """
    e = _check_ratio(ratio)
    k = _check_num_classes(num_classes) - 1 if _check_pattern(pattern) == "sym" else 1
    return e**2 / (e**2 + k * (1.0 - e) ** 2)


def _check_accuracy(accuracy):
    a = float(accuracy)
    if not (math.isfinite(a) and 0.0 <= a <= 1.0):
        raise ValueError(f"accuracy must be in [0, 1], got {accuracy}")
    return a


def estimate_noise_ratio(accuracy, num_classes):
    """Invert the sym accuracy formula ``a = (1-e)^2 + e^2/(c-1)`` for e in [0, (c-1)/c].

    The authors applied the sym formula to asym noise as well; so do we (the caller decides).
    With q = c/(c-1) the formula is ``q e^2 - 2 e + (1 - a) = 0``, decreasing from 1 at e = 0
    to 1/c at e = (c-1)/c. The smaller root is written ``(1-a) / (1 + sqrt(1 - q (1-a)))`` to
    avoid cancellation near a = 1. Accuracies at or below 1/c give (c-1)/c.
    """
    a = _check_accuracy(accuracy)
    c = _check_num_classes(num_classes)
    if a <= 1.0 / c:
        return (c - 1) / c
    d = 1.0 - a
    return d / (1.0 + math.sqrt(max(0.0, 1.0 - c / (c - 1) * d)))


def estimate_noise_ratio_search(accuracy, num_classes, step=0.001):
    """The authors' estimate: the first e on the grid 0, step, 2 step, ... with formula <= a.

    Capped at (c-1)/c. Grid points are ``i * step`` (no accumulated rounding), so the result
    is within ``step`` above ``estimate_noise_ratio``.
    """
    a = _check_accuracy(accuracy)
    c = _check_num_classes(num_classes)
    if not (math.isfinite(step) and 0.0 < step <= 1.0):
        raise ValueError(f"step must be in (0, 1], got {step}")
    cap = (c - 1) / c
    e = np.arange(int(cap / step) + 2) * step
    hit = np.flatnonzero((1.0 - e) ** 2 + e**2 / (c - 1) <= a)
    return min(float(e[hit[0]]), cap) if hit.size else cap


# ------------------------------------------------------- any transition matrix, own labels
GIVEN = "given"  # pattern name of runs on labels as given (no synthetic noise)


def load_transition_matrix(path, num_classes=None):
    """A transition matrix T from ``path`` (.npy, or .csv of c rows of c numbers).

    Rows are true classes, columns noisy classes: each row must be a distribution
    (non-negative, sums to 1 within 1e-6). Errors name the file and the bad row.

    Returns
    -------
    T : ndarray, shape (c, c), float64
    """
    import os

    if not os.path.isfile(path):
        raise FileNotFoundError(f"--transition_matrix file '{path}' does not exist")
    try:
        if path.endswith(".npy"):
            T = np.load(path, allow_pickle=False)
        elif path.endswith(".csv"):
            T = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
        else:
            raise ValueError(f"--transition_matrix '{path}': give a .npy or .csv file")
    except (OSError, ValueError) as err:
        if str(err).startswith("--transition_matrix"):
            raise
        raise ValueError(f"--transition_matrix '{path}': cannot read a matrix: {err}") from None
    T = np.asarray(T, dtype=np.float64)
    if T.ndim != 2 or T.shape[0] != T.shape[1] or T.shape[0] < 2:
        raise ValueError(f"--transition_matrix '{path}': must be a square c x c matrix "
                         f"(c >= 2), got shape {T.shape}")
    if num_classes is not None and T.shape[0] != num_classes:
        raise ValueError(f"--transition_matrix '{path}': is {T.shape[0]} x {T.shape[0]} but "
                         f"the dataset has {num_classes} classes")
    for i, row in enumerate(T):
        if not np.isfinite(row).all() or (row < 0).any():
            raise ValueError(f"--transition_matrix '{path}': row {i} has a negative or "
                             f"non-finite entry: {row.tolist()}")
        if abs(row.sum() - 1.0) > 1e-6:
            raise ValueError(f"--transition_matrix '{path}': row {i} sums to "
                             f"{row.sum():.10g}, not 1 (each row is P(noisy | true = {i}))")
    return T


def transition_name(path):
    """The pattern name of runs drawn from a matrix file: ``T-<file stem>``."""
    import os

    return "T-" + os.path.splitext(os.path.basename(path))[0]


def add_noise_from_transition(labels, T, *, seed=None):
    """Noisy labels drawn from any transition matrix: ``noisy ~ T[label]`` per sample.

    Vectorised (one uniform draw per sample, inverted through the cumulative row of its
    class) and seeded as :func:`add_noise`; the sym / asym draws of :func:`add_noise` are
    untouched.

    Parameters
    ----------
    labels : (n,) int in [0, c)
    T : (c, c) array, rows distributions
    seed : int, None or numpy.random.Generator

    Returns
    -------
    noisy : (n,) int64, a new array
    """
    T = _check_T(T)
    c = T.shape[0]
    y = _check_labels(labels)
    if y.size and (y.min() < 0 or y.max() >= c):
        bad = y[(y < 0) | (y >= c)][0]
        raise ValueError(f"labels must be in [0, {c}), got {bad}")
    u = np.random.default_rng(seed).random(y.size)
    cum = np.cumsum(T, axis=1)
    cum[:, -1] = np.inf  # rows summing to 1 - 1e-7 still map every u < 1 to a class
    noisy = np.empty(y.size, np.int64)
    for k in range(c):
        at = np.flatnonzero(y == k)
        # the first class whose cumulative probability exceeds u (zero-probability
        # classes have no width and are never drawn)
        noisy[at] = np.searchsorted(cum[k], u[at], side="right")
    return noisy


def noise_settings(*, patterns, ratios, transition_matrix=None, given=False,
                   given_name=GIVEN):
    """The (pattern, ratio) settings a call runs: labels as given -> [(given_name, None)]
    ("given", or a CIFAR-N label set's name such as "worse"); a matrix file ->
    [("T-<stem>", None)]; else every pattern x ratio."""
    if given:
        return [(given_name, None)]
    if transition_matrix is not None:
        return [(transition_name(transition_matrix), None)]
    return [(p, r) for p in patterns for r in ratios]


def rule_pattern(pattern, noise_type):
    """The noise type whose rules INCV and Co-teaching follow (large-loss removal, k_best,
    e_S's k, warm-up): a synthetic pattern's own, otherwise the one the user declares."""
    return pattern if pattern in PATTERNS else _check_pattern(noise_type)


def setting_dir(*parts_before, pattern, ratio):
    """Path parts of a setting: ``pattern/ratio`` or, without a ratio (labels as given, a
    matrix file), ``pattern`` alone."""
    return [*parts_before, pattern] + ([] if ratio is None else [f"{ratio:g}"])


def run_labels(data, pattern, ratio, *, seed, T=None):
    """The labels of one run: ``(y_true or None, y_noisy, T or None)``.

    Labels as given are used unchanged (``y_true`` None when the clean ones are unknown);
    otherwise noise is drawn from the pattern (or the matrix ``T``) with the seed's
    "noise" stream.
    """
    from .utils import rng_for

    if pattern == GIVEN or (data.label_set is not None and pattern == data.label_set):
        return data.y_clean, data.y_train_noisy.copy(), None
    if T is not None:
        return data.y_train, add_noise_from_transition(
            data.y_train, T, seed=rng_for(seed, "noise")), T
    return data.y_train, add_noise(data.y_train, pattern, ratio, num_classes=data.num_classes,
                                   seed=rng_for(seed, "noise")), \
        transition_matrix(pattern, ratio, data.num_classes)
