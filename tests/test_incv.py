"""INCV bookkeeping (arXiv:1905.05040, Algorithm 1) against a scripted stand-in for training."""

import numpy as np
import pytest
from conftest import lp_lr

from noisylabels import incv, noise

C = 10


class ScriptedTraining:
    """Stands in for a network: predicts the noisy label exactly for the samples in
    ``agree`` and another class otherwise; the loss of a disagreeing sample grows with its
    index, so the largest-loss samples are known. Records every call."""

    def __init__(self, y_noisy, agree):
        self.y, self.agree, self.calls = y_noisy, agree, []

    def __call__(self, train_idx, held_idx, keep_best, tag):
        self.calls.append((np.array(train_idx), np.array(held_idx), keep_best))
        probs = np.full((len(held_idx), C), 1e-3)
        for row, i in enumerate(held_idx):
            if self.agree[i]:
                probs[row, self.y[i]] = 0.9
            else:
                probs[row, (self.y[i] + 1) % C] = 0.9
                probs[row, self.y[i]] = 0.05 / (1 + i)  # larger index -> larger loss
        return probs / probs.sum(1, keepdims=True)


def _setting(n, agree_fraction, seed=0):
    rng = np.random.default_rng(seed)
    y_true = np.arange(n) % C
    y_noisy = noise.add_noise(y_true, "sym", 0.5, num_classes=C, seed=seed)
    agree = rng.random(n) < agree_fraction
    return y_true, y_noisy, agree


@pytest.mark.parametrize("pattern", ["sym", "asym"])
@pytest.mark.parametrize("agree_fraction", [0.95, 0.5, 0.25, 0.12])
def test_incv_follows_the_paper_step_by_step(pattern, agree_fraction):
    n = 400
    y_true, y_noisy, agree = _setting(n, agree_fraction)
    train = ScriptedTraining(y_noisy, agree)
    st = incv.incv_select(y_noisy, num_classes=C, pattern=pattern, train_fn=train,
                                seed=3, iterations=4, y_true=y_true)
    assert len(train.calls) == 8

    # Replay the algorithm from the recorded calls, independently of the implementation.
    S, Cand = np.zeros(n, bool), np.ones(n, bool)
    e = r = k_best = None
    for k in range(1, 5):
        (tr1, held1, best1), (tr2, held2, best2) = train.calls[2 * k - 2: 2 * k]
        # halves partition the candidates; each run trains on S plus the other half
        assert sorted(np.concatenate([held1, held2])) == list(np.flatnonzero(Cand))
        assert abs(len(held1) - len(held2)) <= 1
        assert sorted(tr1) == sorted(np.concatenate([np.flatnonzero(S), held2]))
        assert sorted(tr2) == sorted(np.concatenate([np.flatnonzero(S), held1]))
        picked1, picked2 = held1[agree[held1]], held2[agree[held2]]
        if k == 1:
            e = noise.estimate_noise_ratio(len(picked1) / (n / 2), C)
            r = min(2.0, e / (1 - e))
            k_best = 1 if (pattern == "asym" or e > 0.6) else (2 if e > 0.3 else 4)
            if agree_fraction == 0.12:  # set-up: e ~ 0.77, the e > 0.6 branch and the cap
                assert e > 0.6 and e / (1 - e) > 2 and r == 2.0 and k_best == 1
        assert best1 == best2 == (k <= k_best)
        removed = []
        for held, picked in ((held1, picked1), (held2, picked2)):
            count = min(int(r * len(picked)), len(held))
            # loss: -log p(label); agreeing samples have small loss, others grow with index
            order = sorted(held, key=lambda i: (not agree[i], i))
            removed += order[len(held) - count:] if count else []
        S[np.concatenate([picked1, picked2])] = True
        Cand[np.concatenate([picked1, picked2])] = False
        if pattern == "sym":
            Cand[removed] = False
        rec = st["iterations"][k - 1]
        assert rec["selected"] == S.sum() and rec["candidates"] == Cand.sum()
        assert (rec["label_precision"], rec["label_recall"]) == pytest.approx(
            lp_lr(y_true, y_noisy, S))
    assert np.array_equal(st["selected"], S) and np.array_equal(st["candidate"], Cand)
    assert st["eval_ratio"] == pytest.approx(e) and st["k_best"] == k_best
    assert st["remove_ratio"] == pytest.approx(r)


def test_incv_estimate_matches_the_authors_search():
    n = 1000
    y_true, y_noisy, agree = _setting(n, 0.3, seed=1)
    train = ScriptedTraining(y_noisy, agree)
    st = incv.incv_select(y_noisy, num_classes=C, pattern="sym", seed=0, iterations=1,
                                train_fn=train)
    held = train.calls[0][1]  # the authors: |S1| / (N / 2) from the first half's run
    acc = agree[held].sum() / (n / 2)
    assert abs(st["eval_ratio"] - noise.estimate_noise_ratio_search(acc, C)) <= 0.001 + 1e-9
    assert 0.4 < st["eval_ratio"] < 0.6  # accuracy ~0.3: e ~ 0.48 by the sym formula


def test_resume_continues_from_a_saved_state():
    n = 300
    y_true, y_noisy, agree = _setting(n, 0.5)
    full = incv.incv_select(y_noisy, num_classes=C, pattern="sym", seed=5,
                                  train_fn=ScriptedTraining(y_noisy, agree))
    saved = []
    part = incv.incv_select(
        y_noisy, num_classes=C, pattern="sym", seed=5, iterations=2,
        train_fn=ScriptedTraining(y_noisy, agree),
        on_iteration=lambda s: saved.append({k: (v.copy() if hasattr(v, "copy") else v)
                                             for k, v in s.items()}))
    assert len(saved) == 2 and len(part["iterations"]) == 2
    train = ScriptedTraining(y_noisy, agree)
    resumed = incv.incv_select(y_noisy, num_classes=C, pattern="sym", seed=5,
                                     train_fn=train, state=saved[-1])
    assert len(train.calls) == 4  # only iterations 3 and 4 were trained
    assert np.array_equal(resumed["selected"], full["selected"])
    assert np.array_equal(resumed["candidate"], full["candidate"])


def test_zero_removal_count_removes_nothing():
    idx = np.arange(10, 20)
    assert incv.largest_loss(idx, np.arange(10.0), 0).size == 0
    assert incv.largest_loss(idx, np.arange(10.0), 2).tolist() == [18, 19]
    assert sorted(incv.largest_loss(idx, np.arange(10.0), 50)) == list(idx)


@pytest.mark.parametrize("pattern, e, k", [("sym", 0.2, 4), ("sym", 0.3, 4), ("sym", 0.31, 2),
                                           ("sym", 0.6, 2), ("sym", 0.61, 1), ("asym", 0.1, 1)])
def test_k_best(pattern, e, k):
    assert incv.k_best_for(pattern, e) == k


def test_incv_csv_round_trip_and_mismatch(tmp_path):
    y_true = np.arange(20) % C
    y_noisy = (y_true + (np.arange(20) % 3 == 0)) % C
    st = {"selected": np.arange(20) < 8, "candidate": np.arange(20) >= 12, "eval_ratio": 0.3}
    path = str(tmp_path / "sel.csv")
    incv.write_incv_csv(path, y_true, y_noisy, st)
    header = open(path).readline().strip()
    assert header == "y,y_noisy,select,candidate,eval_ratio"
    yn, back = incv.read_incv_csv(path, y_true)
    assert np.array_equal(yn, y_noisy) and back["eval_ratio"] == 0.3
    assert np.array_equal(back["selected"], st["selected"])
    assert np.array_equal(back["candidate"], st["candidate"])
    with pytest.raises(ValueError, match="another training set"):
        incv.read_incv_csv(path, y_true[:10])
    with pytest.raises(FileNotFoundError, match="--incv_results"):
        incv.read_incv_csv(str(tmp_path / "missing.csv"), y_true)
