"""Table 1's ranking, ours against the paper's: per CIFAR-10 column of the paper's Table 1
that we measured, whether the paper's order of its methods holds in our means, which pairs
flip, and by how many points and pooled standard deviations.

:func:`table_ranking` reads the rows of :func:`noisylabels.table.table_accuracy`;
:func:`noisylabels.table_format.format_ranking` prints its rows. :func:`has_paper_numbers`
is the one test of "the paper has a column for these runs", shared with the accuracy
table's "(paper)" rows so that the two never disagree.
"""

import itertools
import math

from .published import PAPER_CIFAR10, PAPER_SETTINGS

# The dataset of the paper's Table 1 (its other tables are not transcribed).
PAPER_DATASET = "cifar10"
_NEEDED = ("group", "dataset", "setting", "method", "n", "accuracy_mean", "accuracy_std")


def has_paper_numbers(dataset, setting):
    """Whether the paper's Table 1 has a column for runs of ``dataset`` at ``setting``.

    Parameters
    ----------
    dataset : str
        A run's dataset name ("cifar10", "digits", ...).
    setting : str
        The accuracy table's setting label, e.g. "sym 0.5".

    Returns
    -------
    bool
    """
    return dataset == PAPER_DATASET and setting in PAPER_SETTINGS


def _pooled_std(a, b):
    """sqrt((sA^2 + sB^2) / 2) of two accuracy rows' sample stds, or None when a row has
    fewer than two seeds (its std is None: no spread to compare against)."""
    if a["accuracy_std"] is None or b["accuracy_std"] is None:
        return None
    return math.sqrt((a["accuracy_std"] ** 2 + b["accuracy_std"] ** 2) / 2)


def _in_stds(diff, a, b):
    """(diff in pooled stds or None, its text: "(1.3 std)", "(n=1)" or "(std 0)")."""
    pooled = _pooled_std(a, b)
    if pooled is None:
        return None, f"(n={min(a['n'], b['n'])})"
    if pooled == 0:  # identical seeds: a difference has no finite size in stds
        return None, "(std 0)"
    return diff / pooled, f"({diff / pooled:.1f} std)"


def _check(row):
    """ValueError unless ``row`` is a measured accuracy row with the keys ranking reads."""
    missing = [k for k in _NEEDED if k not in row]
    if missing:
        raise ValueError(f"table_ranking: an accuracy row lacks {', '.join(missing)}: "
                         f"{row.get('group')}, {row.get('setting')}, {row.get('method')}")
    if not isinstance(row["accuracy_mean"], (int, float)) or isinstance(
            row["accuracy_mean"], bool):
        raise ValueError(f"table_ranking: accuracy_mean of {row['method']} at "
                         f"{row['setting']} ({row['group']}) is {row['accuracy_mean']!r}, "
                         "not a number")
    if not isinstance(row["n"], int) or row["n"] < 1:
        raise ValueError(f"table_ranking: n of {row['method']} at {row['setting']} "
                         f"({row['group']}) is {row['n']!r}, not a positive count")


def table_ranking(accuracy_rows):
    """The paper's ranking of its methods per column, checked against our means.

    Only columns the paper has (:func:`has_paper_numbers`: CIFAR-10 at one of
    ``PAPER_SETTINGS``) are ranked, and within them only rows whose method is exactly one of
    the six labels of ``PAPER_CIFAR10``: the default variants (a row labelled "INCV +
    Co-teaching (oracle forget rate: ...)" is another experiment) and never Standard (not in
    the paper's table). A (group, setting) needs two such methods to have an order.

    Parameters
    ----------
    accuracy_rows : list of dict
        :func:`noisylabels.table.table_accuracy`'s rows; those with ``source`` "measured"
        are read (keys group, dataset, setting, method, n, accuracy_mean, accuracy_std:
        final-epoch network-1 clean test accuracy in %, sample std with ddof=1, None when
        n = 1), the others (the paper's and published rows) are skipped.

    Returns
    -------
    list of dict
        One per ranked (group, setting), groups in the order first seen, settings in the
        paper's column order. Keys:

        - ``table`` ("ranking"), ``group``, ``dataset``, ``setting``;
        - ``methods`` (str): the compared methods in the paper's order, ", "-joined;
        - ``n_per_method`` (str): "<method> n=<k>", ", "-joined in the same order;
          ``n`` / ``n_max`` (int): the fewest / most seeds of any compared method;
        - ``paper_order`` / ``measured_order`` (str): the methods by the paper's / our
          mean, best first, " > "-joined (our ties keep the paper's order);
        - ``pairs`` (int): the pairs (A, B) with the paper's mean of A > B's;
          ``pairs_held`` (int): of those, the pairs with our mean of A > ours of B;
        - ``flips`` (str): per pair not held, "B > A by X.XX points (Y.Y std)" (std: pooled
          sample std sqrt((sA^2 + sB^2) / 2); "(n=1)" when a method has one seed; "B = A
          (tie)" for equal means), largest difference first, "; "-joined, "" when none;
        - ``paper_best`` (str): the paper's best of the compared methods; ``next_best``
          (str): our best of the others; ``gap_points`` (float): our mean of paper_best
          minus next_best's (points, negative when the paper's best is not ours);
          ``gap_std`` (float or None): the same in pooled stds (None when n = 1 or both
          stds are 0); ``gap_of_paper_best`` (str): that as text.

    Raises
    ------
    ValueError
        ``accuracy_rows`` is not a list of dicts; a ranked measured row lacks a key, has a
        non-numeric ``accuracy_mean`` or a non-positive ``n``; or one (group, setting,
        method) appears twice.
    """
    if not isinstance(accuracy_rows, (list, tuple)) or not all(
            isinstance(r, dict) for r in accuracy_rows):
        raise ValueError("table_ranking: accuracy_rows must be a list of dicts "
                         "(table_accuracy's rows)")
    cells, col = {}, {s: i for i, s in enumerate(PAPER_SETTINGS)}
    for r in accuracy_rows:
        if (r.get("source") != "measured" or r.get("method") not in PAPER_CIFAR10
                or not has_paper_numbers(r.get("dataset"), r.get("setting"))):
            continue
        _check(r)
        methods = cells.setdefault((r["group"], r["setting"]), {})
        if r["method"] in methods:  # averaging it in twice would be a silent error
            raise ValueError(f"table_ranking: {r['method']} at {r['setting']} "
                             f"({r['group']}) appears twice")
        methods[r["method"]] = r
    groups = list(dict.fromkeys(g for g, _ in cells))
    rows = []
    for (group, setting), ours in sorted(cells.items(), key=lambda kv: (
            groups.index(kv[0][0]), col[kv[0][1]])):
        if len(ours) < 2:
            continue
        paper = {m: PAPER_CIFAR10[m][col[setting]][0] for m in ours}
        paper_order = sorted(ours, key=lambda m: -paper[m])
        mean = {m: ours[m]["accuracy_mean"] for m in ours}
        measured_order = sorted(paper_order, key=lambda m: -mean[m])  # stable: ties as paper
        pairs, flips = 0, []
        for a, b in itertools.combinations(paper_order, 2):
            if paper[a] == paper[b]:  # the paper orders neither first
                continue
            a, b = (a, b) if paper[a] > paper[b] else (b, a)
            pairs += 1
            if mean[a] > mean[b]:
                continue
            diff = mean[b] - mean[a]
            text = (f"{b} = {a} (tie)" if diff == 0 else
                    f"{b} > {a} by {diff:.2f} points {_in_stds(diff, ours[a], ours[b])[1]}")
            flips.append((diff, text))
        best = paper_order[0]
        nxt = next(m for m in measured_order if m != best)
        gap = mean[best] - mean[nxt]
        gap_std, gap_text = _in_stds(gap, ours[best], ours[nxt])
        ns = [ours[m]["n"] for m in paper_order]
        rows.append({
            "table": "ranking", "group": group, "dataset": ours[best]["dataset"],
            "setting": setting, "methods": ", ".join(paper_order),
            "n_per_method": ", ".join(f"{m} n={ours[m]['n']}" for m in paper_order),
            "n": min(ns), "n_max": max(ns), "paper_order": " > ".join(paper_order),
            "measured_order": " > ".join(measured_order), "pairs": pairs,
            "pairs_held": pairs - len(flips),
            "flips": "; ".join(t for _, t in sorted(flips, key=lambda f: -f[0])),
            "paper_best": best, "next_best": nxt, "gap_points": gap, "gap_std": gap_std,
            # signed like the points: "+" says at a glance that the paper's best leads here
            "gap_of_paper_best": f"{best} {gap:+.2f} points vs {nxt} "
                                 + (gap_text if gap_std is None else f"({gap_std:+.1f} std)")})
    return rows
