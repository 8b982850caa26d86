"""What Table 1's other methods did, per setting: F-correction's T error, D2L's turning
epoch, MentorNet's kept weight, Decoupling's disagreement, and the forget rate the two
Co-teaching rows ran with against the noise it should match.

:func:`table_diagnostics` reads the runs of :func:`noisylabels.table.collect_runs` and uses
that module's grouping helpers, imported at call time because it imports this one;
:func:`noisylabels.table_format.format_diagnostics` prints its rows.
"""


# Table 1's methods that table_diagnostics reads (algorithms.ALGORITHMS, and the two
# Co-teaching rows: the forget rate they ran with against the noise it should match).
DIAGNOSED = ("fcorrection", "decoupling", "mentornet", "d2l", "coteaching", "incv")


def table_diagnostics(runs):
    """What Table 1's other methods did, per (group, setting, method) over seeds.

    F-correction: ``T_error`` (its summary's mean |T_est - T| over the c x c entries; None
    where the true T is unknown) and, at the epoch of the lowest noisy-validation loss (the
    reference's checkpoint rule, never the accuracy table's figure), that epoch and network
    1's test accuracy (%). D2L: ``turned`` (how many seeds found a turning point),
    ``turning_epoch`` over those, ``final_alpha``. MentorNet: ``final_weight`` (the last
    epoch's mean sample weight, log.jsonl ``weight``). Decoupling: ``final_disagree`` (the
    last epoch's fraction of each batch updated on) and ``final_disagree_clean`` (the clean
    labels' fraction among them). Co-teaching: ``forget_rate`` (its estimate of e) and
    ``actual_noise`` (the training set's true noise ratio). INCV + Co-teaching:
    ``forget_rate`` (the one it ran with), ``e_S`` (the paper's, from INCV's estimate e) and
    ``noise_of_s`` (S's true noise ratio, 1 - LP): the oracle ablation
    (``--incv_forget_rate true_noise_of_s``) sets the first to the third.
    """
    from . import table as t  # at call time: that module imports this one

    rows, rank = [], list(t.METHOD_LABELS)
    cells = t._cells(runs, "train", lambda r: (t._group(r), r["pattern"], r["ratio"],
                                               r["method"], r["variant"]),
                     lambda r: r["method"] in DIAGNOSED)
    # per setting, Table 1's row order (F-correction, Decoupling, MentorNet, D2L)
    for (group, pattern, ratio, method, variant), rs in sorted(cells, key=lambda kv: (
            t._order(kv[0][:3]), rank.index(kv[0][3]), kv[0][4])):
        s = [r["summary"] for r in rs]
        row = {"table": "diagnostics", "group": t._label(group),
               "setting": t._setting(pattern, ratio), "method": t._method_label(method, variant),
               "method_key": method, "n": len(rs),
               "seeds": " ".join(str(x) for x in sorted(r["seed"] for r in rs))}
        if method == "fcorrection":
            t._put(row, "T_error", [(x.get("fcorrection") or {}).get("mean_abs_error") for x in s])
            best = [x.get("lowest_val_loss_epoch") or {} for x in s]
            t._put(row, "lowest_val_loss_epoch", [b.get("epoch") for b in best])
            t._put(row, "lowest_val_loss_accuracy", [b.get("test_accuracy") for b in best], 100.0)
        elif method == "d2l":
            turning = [x.get("d2l_turning_epoch") for x in s]
            row["turned"] = sum(e is not None for e in turning)
            t._put(row, "turning_epoch", turning)
            t._put(row, "final_alpha", [x.get("d2l_final_alpha") for x in s])
        elif method == "mentornet":
            t._put(row, "final_weight", [t._last_logged(r["path"], "weight") for r in rs])
        elif method == "coteaching":
            t._put(row, "forget_rate", [x.get("forget_rate") for x in s])
            t._put(row, "actual_noise", [x.get("actual_noise_ratio") for x in s])
        elif method == "incv":
            t._put(row, "forget_rate", [x.get("forget_rate") for x in s])
            t._put(row, "e_S", [x.get("expected_noise_of_selected") for x in s])
            lp = [(x.get("selection") or {}).get("label_precision") for x in s]
            t._put(row, "noise_of_s", [None if v is None else 1.0 - v for v in lp])
        else:  # decoupling
            for k in ("disagree", "disagree_clean"):
                t._put(row, f"final_{k}", [t._last_logged(r["path"], k) for r in rs])
        rows.append(row)
    return rows
