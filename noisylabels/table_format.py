"""The report's text: the tables of :mod:`noisylabels.table` (rows: flat dicts) as Markdown
or CSV. ``format_markdown`` is what ``python table.py results/`` prints.

The names and captions it prints (method labels, the paper's run count, the CIFAR-N
protocol) live in :mod:`noisylabels.table` beside the numbers they label; this module reads
them from there at call time, because that module imports this one.
"""


def _t():
    """:mod:`noisylabels.table`, imported at call time: it imports this module at its top."""
    from . import table

    return table


def _num(value, digits=3):
    return "—" if value is None else f"{value:.{digits}f}"


def _fmt(row, name, digits=3, count=True):
    """'mean ± std' of row[name_*] ('mean' alone when n < 2; '(n=k)' when nulls were left out,
    unless ``count`` is False: the caller says how many)."""
    mean, std = row.get(f"{name}_mean"), row.get(f"{name}_std")
    text = _num(mean, digits) + ("" if mean is None or std is None else f" ± {std:.{digits}f}")
    return text + (f" (n={row[f'{name}_n']})" if count and f"{name}_n" in row else "")


def _accuracy_cell(r, name="accuracy"):
    if r is None:
        return "—"
    if r["source"] in ("paper", "published"):
        return _fmt(r, "accuracy", 2) if name == "accuracy" else "—"
    return _fmt(r, name, 2) + f" (n={r['n']})" + (" †" if r["note"] else "")


def _markdown_table(header, body):
    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"
    return "\n".join([line(header), "|" + "---|" * len(header)] + [line(b) for b in body])


def _by_group(rows):
    groups = {}
    for r in rows:
        groups.setdefault(r["group"], []).append(r)
    return groups.items()


def format_comparison(tables):
    """Markdown of :func:`table_selectors` (rows: selector, columns: settings) and
    :func:`table_noise_estimates`; [] when neither has rows."""
    out, t = [], _t()
    if tables.get("selectors"):
        out.append("\n## Selectors: INCV vs. confident learning vs. the noisy CV rule")
    for label, rows in _by_group(tables.get("selectors", [])):
        settings = list(dict.fromkeys(r["setting"] for r in rows))
        methods = [m for m in t.SELECTOR_LABELS.values() if any(r["method"] == m for r in rows)]
        cell = {(r["method"], r["setting"]): r for r in rows}

        def text(r):
            if r is None:
                return "—"
            return (f"|S| {_fmt(r, 'selected', 0)}, LP {_fmt(r, 'label_precision')}, "
                    f"LR {_fmt(r, 'label_recall')} (n={r['n']})")
        out += [f"\n### {label}\n", _markdown_table(
            ["selector"] + settings, [[m] + [text(cell.get((m, s))) for s in settings]
                                      for m in methods])]
    if tables.get("selectors"):
        out.append("\nCells: the final selected set S, mean ± sample std over seeds; LP = "
                   "fraction of S whose label is correct, LR = fraction of the correctly "
                   "labelled samples in S (arXiv:1905.05040, sec. 2).")
    if tables.get("noise_estimates"):
        out.append("\n## Noise-ratio estimates (mean ± sample std over seeds)")
    for label, rows in _by_group(tables.get("noise_estimates", [])):
        out += [f"\n### {label}\n", _markdown_table(
            ["script", "setting", "n", "held-out formula", "confident learning",
             "INCV (first half)",
             "actual", "M to T (MAD)", "CL matrix to T (MAD)"],
            [[r["script"], r["setting"], r["n"]] + [_fmt(r, k) for k in (
                "held_out_formula", "confident_learning", "incv_first_half", "actual",
                "confusion_to_T_mad",
                "cl_noise_matrix_to_T_mad")] for r in rows])]
    if tables.get("flows"):
        out.append("\n## Where the noise goes: empirical T vs held-out confusion M")
    for label, rows in _by_group(tables.get("flows", [])):
        out += [f"\n### {label}\n", _markdown_table(
            ["script", "setting", "n", "true -> noisy", "T", "M", "CL matrix",
             "row noise 1 - T_ii", "row error 1 - M_ii"],
            [[r["script"], r["setting"], r["n"], r["flow"], _num(r["T"]), _num(r["M"]),
              _num(r["CL"]), _num(r["T_row_noise"]), _num(r["M_row_error"])] for r in rows])]
    if tables.get("flows"):
        out.append(f"\nThe {t.FLOWS_SHOWN} largest off-diagonal entries of the empirical T "
                   "(P(noisy label = j | true = i)) per setting, beside the held-out "
                   "confusion M (P(prediction = j | true = i), out-of-sample predictions) and "
                   "confident learning's P(noisy | true) at the same cell; the paper's "
                   "theory (arXiv:1905.05040, sec. 2) has M approach T.")
    return out


def _diagnosis(r):
    """The diagnostics cell of one :func:`~noisylabels.table_diagnostics.table_diagnostics` row."""
    method = r["method_key"]
    if method == "fcorrection":
        return (f"mean |T̂ − T| {_fmt(r, 'T_error')}; reference's checkpoint rule: lowest "
                f"noisy-validation loss at epoch {_fmt(r, 'lowest_val_loss_epoch', 1)}, test "
                f"accuracy {_fmt(r, 'lowest_val_loss_accuracy', 2)} %")
    if method == "d2l":
        found = f"turning point in {r['turned']} of {r['n']} seeds"
        if r["turned"]:
            found += f", epoch {_fmt(r, 'turning_epoch', 1, count=False)}"
        return f"{found}; final alpha {_fmt(r, 'final_alpha')}"
    if method == "mentornet":
        return f"final-epoch mean sample weight {_fmt(r, 'final_weight')}"
    if method == "coteaching":
        return (f"forget rate {_fmt(r, 'forget_rate')} (its estimate of e, or --forget_rate); "
                f"actual noise {_fmt(r, 'actual_noise')}")
    if method == "incv":
        return (f"forget rate {_fmt(r, 'forget_rate')}; e_S from e {_fmt(r, 'e_S')}; S's "
                f"true noise (1 - LP) {_fmt(r, 'noise_of_s')}")
    return (f"final-epoch disagreement fraction {_fmt(r, 'final_disagree')} (clean labels "
            f"among them {_fmt(r, 'final_disagree_clean')})")


def format_diagnostics(tables):
    """Markdown of :func:`~noisylabels.table_diagnostics.table_diagnostics`: a row per setting and
    method, one text cell of that method's figures; [] when no such run was found."""
    rows = tables.get("diagnostics") or []
    title = "\n## Table 1's methods: diagnostics (mean ± sample std over seeds)"
    out = [title] if rows else []
    for label, group in _by_group(rows):
        out += [f"\n### {label}\n", _markdown_table(
            ["setting", "method", "n", "diagnostics"],
            [[r["setting"], r["method"], r["n"], _diagnosis(r)] for r in group])]
    if rows:
        out.append(
            "\nF-correction: mean |T̂ − T| over the c x c entries, T the true transition "
            "matrix (synthetic noise: the pattern's T; labels as given with clean labels: "
            "the clean-to-given label frequencies); the test accuracy of "
            "network 1 at the epoch of its lowest noisy-validation loss is the reference's "
            "checkpoint rule, shown beside the accuracy table's final epoch, never in it. D2L: "
            "the turning epoch as the reference counts it, alpha = the given label's weight in "
            "the bootstrapped target (1 until the turn). MentorNet: the mean sample weight "
            "(the kept fraction). Decoupling: the fraction of each batch the two networks "
            "disagree on, and the clean labels' fraction among those samples. Co-teaching: "
            "the forget rate it ramps up to, its estimate of the noise ratio. INCV + "
            "Co-teaching: the forget rate it ran with (the paper's e_S from INCV's estimate "
            "e, or an oracle's), beside the true noise ratio of its selected set S.")
    return out


def format_ranking(tables):
    """Markdown of :func:`~noisylabels.table_ranking.table_ranking`: a table per group, a
    row per ranked column of the paper's Table 1; when measured accuracy rows exist but none
    is ranked, one line saying why; [] when neither."""
    rows = tables.get("ranking") or []
    measured = any(r.get("source") == "measured" for r in tables.get("accuracy") or [])
    if not rows and not measured:
        return []
    out = ["\n## Table 1's ranking: ours vs the paper's"]
    if not rows:
        # said, not left out: a reader looking for the ranking learns why there is none
        return out + ["\nNone: no group here has two or more of the paper's six methods "
                      "(default flags) measured at a column of its Table 1 (CIFAR-10: "
                      + ", ".join(_t().PAPER_SETTINGS) + ")."]
    for label, group in _by_group(rows):
        out += [f"\n### {label}\n", _markdown_table(
            ["setting", "n", "paper's order", "ours", "pairs held", "flips",
             "paper's best vs our next"],
            [[r["setting"], r["n"] if r["n"] == r["n_max"] else f"{r['n']}–{r['n_max']}",
              r["paper_order"], r["measured_order"], f"{r['pairs_held']}/{r['pairs']}",
              r["flips"] or "none", r["gap_of_paper_best"]] for r in group])]
    out.append(
        "\nA flip: a pair the paper ranks A > B (its Table 1 means) that our means rank B > "
        "A; points: percentage points of clean test accuracy; std: the pair's pooled sample "
        "std over our seeds, sqrt((sA² + sB²)/2) with ddof=1, left out (n=1) when a method "
        "has one run. Ranked: the final-epoch accuracy of network 1 (the table above) of the "
        "paper's six methods with default flags only (no Standard, no variant rows); n: the "
        "fewest (–most) runs of a method.")
    return out


def format_markdown(tables):
    """The report (``build_tables``' output) as Markdown: a section per non-empty table,
    a sub-table per group, then the "Not included" list."""
    t = _t()
    out, order = ["# Results"], list(t.METHOD_LABELS.values())
    if tables["accuracy"]:
        out.append("\n## Clean test accuracy (%), incv_train.py")
    for label, rows in _by_group(tables["accuracy"]):
        settings = list(dict.fromkeys(r["setting"] for r in rows if r["source"] == "measured"))
        methods = sorted(dict.fromkeys(r["method"] for r in rows), key=lambda m: (
            m.endswith("paper)"), order.index(m.split(" (")[0]) if m.split(" (")[0] in order
            else len(order), m))
        cell = {(r["method"], r["setting"]): r for r in rows}
        body = [[m] + [_accuracy_cell(cell.get((m, s))) for s in settings] for m in methods]
        out += [f"\n### {label}\n", _markdown_table(["method"] + settings, body)]
        both = [[m] + [_accuracy_cell(cell.get((m, s)), "accuracy_both") for s in settings]
                for m in methods]
        out += ["\nMean of both networks (final epoch; Standard: its one network):\n",
                _markdown_table(["method"] + settings, both)]
        out += [f"\n† {r['method']}, {r['setting']}: {r['note']}." for r in rows
                if r["source"] == "measured" and r["note"]]
        dataset = rows[0]["dataset"]
        if dataset in t.BEST_EPOCH_CAPTIONS:
            ours = [m for m in methods if not m.endswith("paper)")]
            best = [[m] + [_accuracy_cell(cell.get((m, s)), "accuracy_best_epoch")
                           for s in settings] for m in ours]
            out += [t.BEST_EPOCH_CAPTIONS[dataset], _markdown_table(["method"] + settings, best)]
        if dataset in t.CIFAR_N_DATASETS:
            published = [r for r in rows if r["source"] == "published"]
            out += [f"\nRows marked {t.CIFAR_N_LABEL}: Wei et al., ICLR 2022 "
                    f"(arXiv:2110.12088), {t.CIFAR_N_PROTOCOL}; sources: "
                    + "; ".join(dict.fromkeys(x for r in published
                                              for x in r["published_source"].split("; ")))
                    + "." if published else
                    f"\nNo {t.CIFAR_N_LABEL} rows: none confirmed for these label sets."]
        elif dataset != "cifar10":
            out.append(f"\nNo (paper) rows: the paper's table is for CIFAR-10, not {dataset}.")
    if tables["accuracy"]:
        out.append(
            "\nCells: final-epoch clean test accuracy of network 1 (summary "
            "`test_accuracy.model1`; Co-teaching trains two networks, Standard one), mean ± "
            "sample std (ddof=1) over seeds, n = runs (no ± when n = 1). Rows marked (paper): "
            f"arXiv:1905.05040 Table 1, CIFAR-10, {t.PAPER_RUNS} runs, mean ± as the paper "
            "prints it.")
    others = {t.METHOD_LABELS[m] for m in t.DIAGNOSED}
    if any(r["source"] == "measured" and r["method"].split(" (")[0] in others
           for r in tables["accuracy"]):
        out.append("F-correction (its second, forward-corrected network), MentorNet and D2L "
                   "train one network, Decoupling two; their diagnostics follow.")
    out += format_ranking(tables)
    out += format_diagnostics(tables)
    sections = (
        ("incv_selection", "INCV selection per iteration (mean over seeds)",
         ["setting", "iteration", "n", "|S|", "|C|", "removed", "LP", "LR"],
         lambda r: [r["setting"], r["iteration"], r["n"]]
         + [_num(r[f"{k}_mean"], 1) for k in ("selected", "candidates", "removed")]
         + [_num(r[f"{k}_mean"]) for k in ("label_precision", "label_recall")]),
        ("noise_ratio", "Noise ratio: estimated vs actual (mean ± sample std)",
         ["setting", "method", "n", "estimated", "actual"],
         lambda r: [r["setting"], r["method"], r["n"], _fmt(r, "estimated_noise_ratio"),
                    _fmt(r, "actual_noise_ratio")]),
        ("noisy_cv", "Noisy cross-validation, noisy_cv.py: measured vs theory (held-out "
         "half; accuracy w.r.t. the noisy labels; mean ± sample std)",
         ["setting", "n", "accuracy", "theory", "LP", "theory", "LR", "theory",
          "estimated e", "actual e", "train acc. (noisy labels)", "held-out acc. (true labels)"],
         lambda r: [r["setting"], r["n"]]
         + [x for k in ("accuracy", "label_precision", "label_recall")
            for x in (_fmt(r, k), _num(r[f"{k}_theory"]))]
         + [_fmt(r, "estimated_noise_ratio"), _fmt(r, "actual_noise_ratio"),
            _fmt(r, "train_accuracy"), _fmt(r, "held_out_true_accuracy")]))
    for name, title, header, cells in sections:
        if tables[name]:
            out.append(f"\n## {title}")
        for label, rows in _by_group(tables[name]):
            out += [f"\n### {label}\n", _markdown_table(header, [cells(r) for r in rows])]
    out += format_comparison(tables)
    out.append("\n## Not included\n")
    out += [f"- `{r['path']}`: {r['reason']}" for r in tables["not_included"]] or ["None."]
    return "\n".join(out) + "\n"


def format_csv(tables):
    """Every row of every table as one CSV (column ``table`` names the table; a column a
    table lacks is empty): numbers unrounded, accuracy in %, the rest as fractions."""
    import csv
    import io

    rows = [r for rs in tables.values() for r in rs]
    columns = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns or ["table"], lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)
    return buf.getvalue()
