"""table_ranking.py: the paper's Table 1 ranking of its methods against ours, on synthetic
run directories (the fake runs of test_table.py)."""

import csv
import io
import math

import numpy as np
import pytest
from test_table import _row, _set, _train_run

from noisylabels import table
from noisylabels.table_ranking import has_paper_numbers, table_ranking

HEADER = ("| setting | n | paper's order | ours | pairs held | flips | "
          "paper's best vs our next |")
# (pattern, ratio, method) -> network 1's final accuracy per seed (fractions, as summaries).
# sym 0.2: the paper's order INCV > Co-teaching > MentorNet holds (two seeds each).
# sym 0.5: the paper has INCV > Co-teaching > F-correction > D2L; ours flips two pairs:
#   Co-teaching 86 ± 1 over INCV 82 ± 2 (three seeds), D2L 78 (one seed) over F-corr. 71.
# asym 0.4: one seed each, Co-teaching over INCV (the paper: INCV first).
# sym 0.8: one default method of the paper's six (Co-teaching): no order to check.
ACC = {("sym", 0.2, "incv"): [0.90, 0.92], ("sym", 0.2, "coteaching"): [0.88, 0.86],
       ("sym", 0.2, "mentornet"): [0.80, 0.82],
       ("sym", 0.5, "incv"): [0.80, 0.84, 0.82], ("sym", 0.5, "coteaching"): [0.85, 0.86, 0.87],
       ("sym", 0.5, "fcorrection"): [0.70, 0.72], ("sym", 0.5, "d2l"): [0.78],
       ("asym", 0.4, "incv"): [0.80], ("asym", 0.4, "coteaching"): [0.84],
       ("sym", 0.8, "coteaching"): [0.20, 0.22]}


@pytest.fixture
def runs(tmp_path):
    """The runs of ACC, plus what must never be ranked: Standard best everywhere, an INCV
    variant (oracle forget rate) best at sym 0.2 and the second "method" at sym 0.8, and a
    digits group with two of the paper's methods."""
    root = str(tmp_path / "main")
    for (pattern, ratio, method), accs in ACC.items():
        for seed, acc in enumerate(accs):
            _train_run(root, pattern, ratio, method, seed, acc)
    for pattern, ratio in (("sym", 0.2), ("sym", 0.5), ("sym", 0.8), ("asym", 0.4)):
        _train_run(root, pattern, ratio, "standard", 0, 0.99)
        variant = _train_run(str(tmp_path / "variant"), pattern, ratio, "incv", 0, 0.99)
        _set(variant, args={"incv_forget_rate": "true_noise_of_s"})
    for method, acc in (("incv", 0.5), ("coteaching", 0.6)):  # the paper: INCV first
        for seed in (0, 1):
            digits = _train_run(str(tmp_path / "digits"), "sym", 0.5, method, seed, acc)
            _set(digits, args={"dataset": "digits"}, summary={"dataset": "digits"})
    return table.collect_runs([str(tmp_path)])


def test_has_paper_numbers():
    assert has_paper_numbers("cifar10", "sym 0.5") and has_paper_numbers("cifar10", "asym 0.4")
    assert not has_paper_numbers("cifar10", "sym 0.4")  # not a column of Table 1
    assert not has_paper_numbers("cifar10", "asym 0.2")
    assert not has_paper_numbers("digits", "sym 0.5")
    assert not has_paper_numbers("cifar10n", "worse")


def test_a_column_where_the_papers_order_holds(runs):
    rows = table.build_tables(runs)["ranking"]
    r = _row(rows, setting="sym 0.2")
    assert r["table"] == "ranking" and r["dataset"] == "cifar10"
    assert r["methods"] == "INCV + Co-teaching, Co-teaching, MentorNet"
    assert r["n_per_method"] == "INCV + Co-teaching n=2, Co-teaching n=2, MentorNet n=2"
    assert (r["n"], r["n_max"]) == (2, 2)
    assert r["paper_order"] == r["measured_order"] == "INCV + Co-teaching > Co-teaching > MentorNet"
    assert (r["pairs_held"], r["pairs"], r["flips"]) == (3, 3, "")
    assert (r["paper_best"], r["next_best"]) == ("INCV + Co-teaching", "Co-teaching")
    # 91 - 87 points over sqrt((s^2 + s^2) / 2) with s = std([90, 92], ddof=1) = sqrt(2)
    assert r["gap_points"] == pytest.approx(4.0)
    assert r["gap_std"] == pytest.approx(4.0 / math.sqrt(2.0))
    assert r["gap_of_paper_best"] == "INCV + Co-teaching +4.00 points vs Co-teaching (+2.8 std)"


def test_flipped_pairs_their_points_and_pooled_stds(runs):
    r = _row(table.build_tables(runs)["ranking"], setting="sym 0.5")
    assert r["paper_order"] == "INCV + Co-teaching > Co-teaching > F-correction > D2L"
    assert r["measured_order"] == "Co-teaching > INCV + Co-teaching > D2L > F-correction"
    assert (r["pairs_held"], r["pairs"], r["n"], r["n_max"]) == (4, 6, 1, 3)
    s_incv, s_cot = np.std([80, 84, 82], ddof=1), np.std([85, 86, 87], ddof=1)  # 2 and 1
    pooled = math.sqrt((s_incv ** 2 + s_cot ** 2) / 2)                          # sqrt(2.5)
    assert f"{4 / pooled:.1f}" == "2.5"
    # largest difference first; D2L has one seed: no std, "(n=1)"
    assert r["flips"] == ("D2L > F-correction by 7.00 points (n=1); "
                          "Co-teaching > INCV + Co-teaching by 4.00 points (2.5 std)")
    assert (r["paper_best"], r["next_best"]) == ("INCV + Co-teaching", "Co-teaching")
    assert r["gap_points"] == pytest.approx(-4.0)
    assert r["gap_std"] == pytest.approx(-4.0 / pooled)
    assert r["gap_of_paper_best"] == "INCV + Co-teaching -4.00 points vs Co-teaching (-2.5 std)"


def test_one_seed_each_has_no_std(runs):
    r = _row(table.build_tables(runs)["ranking"], setting="asym 0.4")
    assert (r["pairs_held"], r["pairs"], r["n"]) == (0, 1, 1)
    assert r["flips"] == "Co-teaching > INCV + Co-teaching by 4.00 points (n=1)"
    assert r["gap_std"] is None and r["gap_points"] == pytest.approx(-4.0)
    assert r["gap_of_paper_best"] == "INCV + Co-teaching -4.00 points vs Co-teaching (n=1)"


def test_standard_variants_and_groups_without_the_papers_numbers_are_not_ranked(runs):
    tables = table.build_tables(runs)
    rows = tables["ranking"]
    # the variant and Standard rows are measured (at 99 %, they would top every order)...
    measured = {r["method"] for r in tables["accuracy"] if r["source"] == "measured"}
    assert {"Standard", "INCV + Co-teaching (oracle forget rate: S's true noise)"} <= measured
    # ...and never ranked
    assert all("Standard" not in r["methods"] and "oracle" not in r["methods"]
               and "Standard" not in r["measured_order"] for r in rows)
    assert _row(rows, setting="sym 0.2")["n_per_method"].count("n=") == 3
    # sym 0.8: Co-teaching, Standard and an INCV variant; one of the six defaults: no order
    assert [r["setting"] for r in rows] == ["sym 0.2", "sym 0.5", "asym 0.4"]
    assert not [r for r in rows if r["dataset"] != "cifar10" or "digits" in r["group"]]
    # exactly the columns the accuracy table prints the paper's rows for (same test)
    paper = {(r["group"], r["setting"]) for r in tables["accuracy"] if r["source"] == "paper"}
    assert {(r["group"], r["setting"]) for r in rows} == paper - {
        (rows[0]["group"], "sym 0.8")}


def test_markdown_section_and_csv(runs):
    tables = table.build_tables(runs)
    md = table.format_markdown(tables)
    title = "## Table 1's ranking: ours vs the paper's"
    section = md[md.index(title):md.index("\n## ", md.index(title))]
    assert HEADER in section
    assert ("| sym 0.5 | 1–3 | INCV + Co-teaching > Co-teaching > F-correction > D2L | "
            "Co-teaching > INCV + Co-teaching > D2L > F-correction | 4/6 | D2L > F-correction "
            "by 7.00 points (n=1); Co-teaching > INCV + Co-teaching by 4.00 points (2.5 std) | "
            "INCV + Co-teaching -4.00 points vs Co-teaching (-2.5 std) |") in section
    assert ("| sym 0.2 | 2 | INCV + Co-teaching > Co-teaching > MentorNet | INCV + Co-teaching "
            "> Co-teaching > MentorNet | 3/3 | none |") in section
    assert "| sym 0.8 |" not in section and "digits" not in section
    assert "A flip:" in section and "pooled sample std" in section and "network 1" in section
    # after Table 1 itself, before the rest of the report
    assert md.index("## Clean test accuracy") < md.index(title) < md.index("## Not included")
    ranked = [r for r in csv.DictReader(io.StringIO(table.format_csv(tables)))
              if r["table"] == "ranking"]
    assert [r["setting"] for r in ranked] == ["sym 0.2", "sym 0.5", "asym 0.4"]
    assert _row(ranked, setting="asym 0.4")["gap_std"] == ""  # None: an empty cell
    assert float(_row(ranked, setting="sym 0.5")["pairs_held"]) == 4


def test_no_ranked_column_says_so(tmp_path):
    """Measured runs that cannot be ranked (digits; one method of the six) get one line,
    not a silently missing section; no training runs at all: no section."""
    for method in ("incv", "coteaching"):
        run = _train_run(str(tmp_path / "digits"), "sym", 0.5, method, 0, 0.5)
        _set(run, args={"dataset": "digits"}, summary={"dataset": "digits"})
    _train_run(str(tmp_path / "cifar"), "sym", 0.5, "incv", 0, 0.5)
    _train_run(str(tmp_path / "cifar"), "sym", 0.5, "standard", 0, 0.5)
    tables = table.build_tables(table.collect_runs([str(tmp_path)]))
    assert tables["ranking"] == []
    md = table.format_markdown(tables)
    assert "## Table 1's ranking: ours vs the paper's\n\nNone: " in md and HEADER not in md
    assert table.format_markdown({**tables, "accuracy": []}).count("ranking") == 0


def _acc(method, mean, std, n, setting="sym 0.5", group="g", **extra):
    return {"table": "accuracy", "group": group, "dataset": "cifar10", "setting": setting,
            "method": method, "source": "measured", "n": n, "accuracy_mean": mean,
            "accuracy_std": std, **extra}


def test_ties_and_zero_spread():
    (r,) = table_ranking([_acc("Co-teaching", 80.0, 0.0, 2),
                          _acc("INCV + Co-teaching", 80.0, 0.0, 2),
                          _acc("Co-teaching (paper)", 82.12, 0.59, 5, source="paper")])
    assert (r["pairs_held"], r["pairs"]) == (0, 1)  # a tie does not keep the paper's A > B
    assert r["flips"] == "Co-teaching = INCV + Co-teaching (tie)"
    assert r["measured_order"] == r["paper_order"]  # ties keep the paper's order
    assert r["gap_points"] == 0.0 and r["gap_std"] is None
    assert r["gap_of_paper_best"].endswith("(std 0)")


def test_paper_best_against_our_best_other_method():
    """Our next is our best of the others (D2L here), not the paper's second; the paper's
    best is the best of the methods measured (Co-teaching when INCV did not run)."""
    (r,) = table_ranking([_acc("INCV + Co-teaching", 80.0, 2.0, 3), _acc("Co-teaching", 70.0,
                                                                        1.0, 3),
                          _acc("D2L", 75.0, 1.0, 3)])
    assert (r["paper_best"], r["next_best"], r["gap_points"]) == ("INCV + Co-teaching", "D2L",
                                                                  5.0)
    assert r["gap_std"] == pytest.approx(5.0 / math.sqrt(2.5))
    (r,) = table_ranking([_acc("D2L", 75.0, 1.0, 3), _acc("Co-teaching", 70.0, 1.0, 3)])
    assert (r["paper_best"], r["next_best"], r["gap_points"]) == ("Co-teaching", "D2L", -5.0)


def test_bad_input():
    with pytest.raises(ValueError, match="list of dicts"):
        table_ranking("accuracy")
    with pytest.raises(ValueError, match="appears twice"):
        table_ranking([_acc("D2L", 1.0, None, 1), _acc("D2L", 2.0, None, 1)])
    with pytest.raises(ValueError, match="lacks accuracy_std"):
        bad = _acc("D2L", 1.0, None, 1)
        del bad["accuracy_std"]
        table_ranking([bad])
    with pytest.raises(ValueError, match="not a number"):
        table_ranking([_acc("D2L", "85", None, 1)])
    with pytest.raises(ValueError, match="not a positive count"):
        table_ranking([_acc("D2L", 85.0, None, 0)])
    # rows that are never ranked are never checked: the paper's own, Standard, other data
    assert table_ranking([_acc("Standard", None, None, 0), _acc("D2L", None, None, 0,
                                                                 source="paper")]) == []
