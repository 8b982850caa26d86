"""Tests for noise.py: sampling statistics, reproducibility, theory values, estimation, errors.

Expected numbers are computed by hand from the closed forms of arXiv:1905.05040 sec. 2,
never by calling the function under test a second way.
"""

import math
import pathlib
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from noisylabels import noise  # noqa: E402
from noisylabels.noise import (  # noqa: E402
    actual_noise_ratio,
    add_noise,
    estimate_noise_ratio,
    estimate_noise_ratio_search,
    expected_accuracy,
    expected_label_precision,
    expected_label_recall,
    expected_noise_of_selected,
    transition_matrix,
)

C = 10
N = 500_000  # 50k per class: 5 binomial sigmas stay below 0.012


# ------------------------------------------------------------------------ transition matrix
def test_transition_matrix_hand_values():
    np.testing.assert_allclose(
        transition_matrix("sym", 0.3, 4),
        [[0.7, 0.1, 0.1, 0.1], [0.1, 0.7, 0.1, 0.1], [0.1, 0.1, 0.7, 0.1], [0.1, 0.1, 0.1, 0.7]],
    )
    np.testing.assert_allclose(
        transition_matrix("asym", 0.3, 3), [[0.7, 0.3, 0.0], [0.0, 0.7, 0.3], [0.3, 0.0, 0.7]]
    )
    T = transition_matrix("sym", 1.0, 2)
    assert T.dtype == np.float64
    np.testing.assert_array_equal(T, [[0.0, 1.0], [1.0, 0.0]])


# --------------------------------------------------------------------------- noise sampling
@pytest.fixture(scope="module")
def clean_labels():
    return np.tile(np.arange(C), N // C)


@pytest.mark.parametrize("pattern", ["sym", "asym"])
@pytest.mark.parametrize("ratio", [0.0, 0.2, 0.5, 0.8, 1.0])
def test_empirical_transition_matches_T(clean_labels, pattern, ratio):
    noisy = add_noise(clean_labels, pattern, ratio, num_classes=C, seed=123)
    counts = np.bincount(clean_labels * C + noisy, minlength=C * C).reshape(C, C)
    empirical = counts / counts.sum(axis=1, keepdims=True)

    e = ratio
    expected = np.zeros((C, C))  # built by hand, independent of transition_matrix()
    for i in range(C):
        if pattern == "sym":
            expected[i, :] = e / (C - 1)
        else:
            expected[i, (i + 1) % C] = e
        expected[i, i] = 1 - e
    # Per-entry binomial bound, 5 standard deviations of a row frequency (at most 0.0112).
    tol = 5 * np.sqrt(expected * (1 - expected) / (N // C)) + 1e-12
    assert (np.abs(empirical - expected) <= tol).all(), np.abs(empirical - expected).max()
    # Impossible transitions must never happen (catches "uniform over all c" and the like).
    assert counts[expected == 0].sum() == 0
    assert abs(actual_noise_ratio(clean_labels, noisy) - e) < 0.004


def test_sym_noise_rate_is_e_not_e_times_c_minus_1_over_c(clean_labels):
    # Uniform-over-all-c noise at 0.5 would give 0.45 here.
    noisy = add_noise(clean_labels, "sym", 0.5, seed=0)
    assert abs(actual_noise_ratio(clean_labels, noisy) - 0.5) < 0.005


def test_output_dtype_shape_and_range(clean_labels):
    noisy = add_noise(clean_labels[:1000], "sym", 0.5, seed=1)
    assert noisy.dtype == np.int64 and noisy.shape == (1000,)
    assert noisy.min() >= 0 and noisy.max() < C


def test_num_classes_inferred_and_explicit():
    y = np.array([0, 1, 2, 3, 4] * 200)
    inferred = add_noise(y, "sym", 1.0, seed=0)
    assert inferred.max() <= 4 and (inferred != y).all()
    wider = add_noise(y, "sym", 1.0, num_classes=50, seed=0)
    assert wider.max() > 4  # classes beyond those present are reachable


def test_accepts_list_and_whole_number_floats():
    out_list = add_noise([0, 1, 2, 1], "asym", 1.0, num_classes=3, seed=0)
    out_float = add_noise(np.array([0.0, 1.0, 2.0, 1.0]), "asym", 1.0, num_classes=3, seed=0)
    np.testing.assert_array_equal(out_list, [1, 2, 0, 2])
    np.testing.assert_array_equal(out_float, [1, 2, 0, 2])


def test_empty_labels_with_num_classes():
    out = add_noise(np.array([], dtype=int), "sym", 0.5, num_classes=3, seed=0)
    assert out.shape == (0,) and out.dtype == np.int64


# -------------------------------------------------------------------------- reproducibility
def test_same_seed_same_output_different_seed_different(clean_labels):
    a = add_noise(clean_labels, "sym", 0.4, seed=7)
    b = add_noise(clean_labels, "sym", 0.4, seed=7)
    c = add_noise(clean_labels, "sym", 0.4, seed=8)
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()


def test_generator_seed_is_used():
    y = np.arange(1000) % C
    a = add_noise(y, "sym", 0.5, seed=np.random.default_rng(3))
    b = add_noise(y, "sym", 0.5, seed=np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("ratio", [0.0, 0.5, 1.0])
def test_input_not_mutated_and_output_is_new(ratio):
    y = np.arange(1000, dtype=np.int64) % C
    y_copy = y.copy()
    out = add_noise(y, "asym", ratio, seed=0)
    np.testing.assert_array_equal(y, y_copy)
    assert out is not y and not np.shares_memory(out, y)
    out[:] = -1  # writing to the output must not reach the input
    np.testing.assert_array_equal(y, y_copy)


# -------------------------------------------------------------------------------- theory
@pytest.mark.parametrize(
    "pattern, ratio, acc, lp",
    [
        ("sym", 0.2, 0.6444, 0.9931),
        ("sym", 0.5, 0.2778, 0.9000),
        ("sym", 0.8, 0.1111, 0.3600),
        ("asym", 0.4, 0.5200, 0.6923),
    ],
)
def test_reference_table(pattern, ratio, acc, lp):
    T = transition_matrix(pattern, ratio, C)
    assert round(expected_accuracy(T), 4) == acc
    assert round(expected_label_precision(T), 4) == lp
    assert expected_label_recall(T) == pytest.approx(1 - ratio, abs=1e-12)


@pytest.mark.parametrize("pattern", ["sym", "asym"])
@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.3, 0.6, 0.9, 0.99])
@pytest.mark.parametrize("c", [2, 3, 10])
def test_general_forms_match_closed_forms_any_prior(pattern, ratio, c):
    T = transition_matrix(pattern, ratio, c)
    prior = np.random.default_rng(c).random(c) + 0.1  # unnormalised on purpose
    k = c - 1 if pattern == "sym" else 1
    acc = (1 - ratio) ** 2 + ratio**2 / k  # every row has this squared sum
    assert expected_accuracy(T, prior) == pytest.approx(acc, abs=1e-12)
    assert expected_label_precision(T, prior) == pytest.approx((1 - ratio) ** 2 / acc, abs=1e-12)
    assert expected_label_recall(T, prior) == pytest.approx(1 - ratio, abs=1e-12)
    assert expected_noise_of_selected(ratio, pattern, c) == pytest.approx(
        1 - (1 - ratio) ** 2 / acc, abs=1e-12
    )


def test_general_T_non_uniform_prior_by_hand():
    T = [[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.5, 0.25, 0.25]]
    prior = [1, 2, 1]  # -> 0.25, 0.5, 0.25
    # squared row sums: 0.54, 0.66, 0.375 -> 0.25*0.54 + 0.5*0.66 + 0.25*0.375
    acc = 0.135 + 0.33 + 0.09375
    # squared diagonal: 0.49, 0.64, 0.0625
    num = 0.1225 + 0.32 + 0.015625
    # diagonal: 0.7, 0.8, 0.25
    den = 0.175 + 0.4 + 0.0625
    assert expected_accuracy(T, prior) == pytest.approx(0.55875, abs=1e-12)
    assert expected_accuracy(T, prior) == pytest.approx(acc, abs=1e-12)
    assert expected_label_precision(T, prior) == pytest.approx(num / acc, abs=1e-12)
    assert expected_label_recall(T, prior) == pytest.approx(num / den, abs=1e-12)
    # Uniform prior differs: (0.54 + 0.66 + 0.375) / 3
    assert expected_accuracy(T) == pytest.approx(0.525, abs=1e-12)


def test_recall_is_nan_when_no_label_survives():
    assert math.isnan(expected_label_recall(transition_matrix("sym", 1.0, C)))
    assert math.isnan(expected_label_recall(transition_matrix("asym", 1.0, C)))
    # Only class 2 keeps labels, and the prior gives it no weight.
    T = [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    assert math.isnan(expected_label_recall(T, prior=[1, 1, 0]))
    assert expected_label_recall(T) == pytest.approx(1.0)


def test_precision_at_full_noise_is_zero():
    assert expected_label_precision(transition_matrix("sym", 1.0, C)) == 0.0


@pytest.mark.parametrize(
    "ratio, pattern, c, expected",
    [
        (0.0, "sym", 10, 0.0),
        (1.0, "sym", 10, 1.0),
        (0.5, "sym", 10, 0.25 / (0.25 + 9 * 0.25)),  # 0.1
        (0.4, "asym", 10, 0.16 / (0.16 + 0.36)),
        (0.8, "sym", 10, 0.64 / (0.64 + 9 * 0.04)),  # 0.64
        (0.2, "sym", 2, 0.04 / (0.04 + 0.64)),
    ],
)
def test_expected_noise_of_selected_hand_values(ratio, pattern, c, expected):
    assert expected_noise_of_selected(ratio, pattern, c) == pytest.approx(expected, abs=1e-12)


def test_actual_noise_ratio_hand_value():
    assert actual_noise_ratio([0, 1, 2, 3], [0, 1, 0, 0]) == 0.5


# ------------------------------------------------------------------------------ estimation
def _sym_accuracy(e, c):  # independent of noise.py
    return (1 - e) ** 2 + e**2 / (c - 1)


@pytest.mark.parametrize("c", [2, 3, 10, 100])
def test_estimate_round_trip(c):
    cap = (c - 1) / c
    for e in np.round(np.arange(0.0, 0.9 + 1e-9, 0.01), 2):
        if e > cap + 1e-12:
            continue  # the other root: not invertible
        a = expected_accuracy(transition_matrix("sym", e, c))
        assert estimate_noise_ratio(a, c) == pytest.approx(e, abs=1e-9), (e, c)


@pytest.mark.parametrize(
    "a, c, expected",
    [
        (1.0, 10, 0.0),
        (0.1, 10, 0.9),
        (0.05, 10, 0.9),  # below chance: clipped
        (0.0, 10, 0.9),
        (0.58, 2, 0.3),  # e^2 - e + 0.21 = 0 -> e = (1 - 0.4) / 2
        (0.5, 2, 0.5),
        # asym 0.4 (accuracy 0.52) through the sym formula: root of (10/9) e^2 - 2 e + 0.48
        (0.52, 10, (1 - math.sqrt(1 - 0.48 * 10 / 9)) * 0.9),
    ],
)
def test_estimate_hand_values(a, c, expected):
    if (a, c) == (0.52, 10):
        # The authors' sym inversion underestimates asym noise: root of
        # (10/9) e^2 - 2 e + 0.48 = 0 -> e = (1 - sqrt(1 - 0.48 * 10/9)) * 0.9
        expected = (1 - math.sqrt(1 - 0.48 * 10 / 9)) * 0.9
        assert expected < 0.4
    assert estimate_noise_ratio(a, c) == pytest.approx(expected, abs=1e-12)


def test_sym_inversion_underestimates_asym_noise():
    # The authors' choice: asym 0.4 gives accuracy 0.52, which the sym formula reads as ~0.285.
    assert estimate_noise_ratio(0.52, 10) == pytest.approx(0.2852, abs=1e-4)


def test_search_hand_value():
    # f(0.200) = 0.644444 > 0.6444 and f(0.201) = 0.638401 + 0.004489 = 0.642890 <= 0.6444.
    assert estimate_noise_ratio_search(0.6444, 10) == pytest.approx(0.201, abs=1e-12)
    assert estimate_noise_ratio_search(1.0, 10) == 0.0
    assert estimate_noise_ratio_search(0.0, 10) == pytest.approx(0.9)
    assert estimate_noise_ratio_search(0.58, 2, step=0.1) == pytest.approx(0.3)


@pytest.mark.parametrize("c", [2, 3, 10, 100])
def test_closed_form_agrees_with_search(c):
    for a in np.linspace(1.0 / c, 1.0, 1201):
        closed = estimate_noise_ratio(a, c)
        searched = estimate_noise_ratio_search(a, c)
        # The search returns the first grid point at or past the root.
        assert -1e-9 <= searched - closed <= 0.001 + 1e-9, (a, c, closed, searched)
        assert _sym_accuracy(closed, c) == pytest.approx(a, abs=1e-9) or a <= 1.0 / c + 1e-12


# --------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("bad", [1.5, -0.1, float("nan"), float("inf")])
def test_bad_ratio(bad):
    with pytest.raises(ValueError, match=r"ratio must be in \[0, 1\], got"):
        add_noise([0, 1], "sym", bad, seed=0)
    with pytest.raises(ValueError, match=r"ratio must be in \[0, 1\], got"):
        transition_matrix("sym", bad, 3)
    with pytest.raises(ValueError, match=r"ratio must be in \[0, 1\], got"):
        expected_noise_of_selected(bad, "sym", 3)


def test_bad_ratio_message_shows_value():
    with pytest.raises(ValueError, match=r"ratio must be in \[0, 1\], got 1\.5$"):
        add_noise([0, 1], "sym", 1.5)


def test_unknown_pattern():
    for call in (
        lambda: add_noise([0, 1], "pair", 0.2),
        lambda: transition_matrix("pair", 0.2, 3),
        lambda: expected_noise_of_selected(0.2, "pair", 3),
    ):
        with pytest.raises(ValueError, match=r"pattern must be one of.*'sym'.*'asym'.*'pair'"):
            call()


@pytest.mark.parametrize("labels, bad", [([0, 1, 5], "5"), ([0, -1, 2], "-1")])
def test_labels_out_of_range(labels, bad):
    with pytest.raises(ValueError, match=rf"labels must be in \[0, 3\), got {bad}"):
        add_noise(labels, "sym", 0.2, num_classes=3)


def test_non_integer_labels():
    with pytest.raises(ValueError, match=r"labels must be integers.*1\.5"):
        add_noise([0.0, 1.5], "sym", 0.2, num_classes=3)
    with pytest.raises(ValueError, match=r"labels must be integers.*nan"):
        add_noise([0.0, float("nan")], "sym", 0.2, num_classes=3)
    with pytest.raises(ValueError, match=r"labels must be integers, got dtype"):
        add_noise(np.array(["a", "b"]), "sym", 0.2, num_classes=3)


def test_labels_not_1d():
    with pytest.raises(ValueError, match=r"labels must be 1-D, got shape \(2, 2\)"):
        add_noise([[0, 1], [1, 0]], "sym", 0.2)
    with pytest.raises(ValueError, match=r"labels must be 1-D, got shape \(\)"):
        add_noise(3, "sym", 0.2)


def test_too_few_classes():
    with pytest.raises(ValueError, match=r"num_classes must be >= 2, got 1"):
        add_noise([0, 0, 0], "sym", 0.2)  # inferred c = 1
    with pytest.raises(ValueError, match=r"num_classes must be >= 2, got 1"):
        transition_matrix("sym", 0.2, 1)
    with pytest.raises(ValueError, match=r"num_classes must be an integer, got 2\.5"):
        transition_matrix("sym", 0.2, 2.5)
    with pytest.raises(ValueError, match=r"num_classes must be >= 2, got 1"):
        estimate_noise_ratio(0.5, 1)
    with pytest.raises(ValueError, match=r"cannot infer num_classes from empty labels"):
        add_noise([], "sym", 0.2)


@pytest.mark.parametrize(
    "T, message",
    [
        (np.full((2, 3), 1 / 3), r"T must be a square 2-D matrix, got shape \(2, 3\)"),
        (np.ones(3) / 3, r"T must be a square 2-D matrix, got shape \(3,\)"),
        ([[1.0]], r"num_classes must be >= 2, got 1"),
        ([[1.5, -0.5], [0.0, 1.0]], r"non-negative entries, got min -0\.5"),
        ([[0.5, 0.4], [0.0, 1.0]], r"rows of T must sum to 1, row 0 sums to 0\.9"),
        ([[1.0, 0.0], [0.3, 0.7 + 1e-5]], r"row 1 sums to 1\.00001"),
    ],
)
def test_bad_T(T, message):
    for fn in (expected_accuracy, expected_label_precision, expected_label_recall):
        with pytest.raises(ValueError, match=message):
            fn(T)


def test_T_within_tolerance_is_accepted():
    # Uniform prior: (1 + 0.3^2 + (0.7 + 1e-8)^2) / 2.
    assert expected_accuracy([[1.0, 0.0], [0.3, 0.7 + 1e-8]]) == pytest.approx(
        (1 + 0.09 + (0.7 + 1e-8) ** 2) / 2, abs=1e-15)


@pytest.mark.parametrize(
    "prior, message",
    [
        ([0.5, 0.5], r"prior must have shape \(3,\), got shape \(2,\)"),
        ([0, 0, 0], r"prior must have a positive sum, got 0"),
        ([1, -1, 1], r"prior must be finite and non-negative"),
    ],
)
def test_bad_prior(prior, message):
    T = transition_matrix("sym", 0.2, 3)
    for fn in (expected_accuracy, expected_label_precision, expected_label_recall):
        with pytest.raises(ValueError, match=message):
            fn(T, prior)


@pytest.mark.parametrize("bad", [-0.1, 1.1, float("nan")])
def test_bad_accuracy(bad):
    with pytest.raises(ValueError, match=r"accuracy must be in \[0, 1\], got"):
        estimate_noise_ratio(bad, 10)
    with pytest.raises(ValueError, match=r"accuracy must be in \[0, 1\], got"):
        estimate_noise_ratio_search(bad, 10)


@pytest.mark.parametrize("step", [0.0, -0.001, 2.0])
def test_bad_step(step):
    with pytest.raises(ValueError, match=r"step must be in \(0, 1\], got"):
        estimate_noise_ratio_search(0.5, 10, step=step)


def test_actual_noise_ratio_errors():
    with pytest.raises(ValueError, match=r"same shape, got \(3,\), \(2,\)"):
        actual_noise_ratio([0, 1, 2], [0, 1])
    with pytest.raises(ValueError, match=r"must not be empty"):
        actual_noise_ratio([], [])
    with pytest.raises(ValueError, match=r"y_true must be 1-D"):
        actual_noise_ratio([[0]], [0])


def test_patterns_constant():
    assert noise.PATTERNS == ("sym", "asym")
