"""Figures: confusion vs. transition matrix (arXiv:1905.05040, Fig. 1), the theory sweep
(Fig. 2), INCV's label precision / recall per iteration (Fig. 3) and test-accuracy curves
(Fig. 4). Every figure is written atomically with matplotlib's headless Agg backend."""

import glob
import os

import numpy as np

from . import utils


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # headless: figures are files
    import matplotlib.pyplot as plt

    return plt


def plot_confusion_vs_transition(confusion, transition, path, *, title=""):
    """Side-by-side heat maps: measured held-out confusion M (true x pred) and noise T."""
    plot_noise_matrices([("measured confusion M (held-out)", confusion),
                         ("noise transition T", transition)], path, title=title)


def plot_theory_sweep(points, path, *, num_classes, title=""):
    """The paper's theory figure: measured held-out accuracy, LP and LR (points) over the
    closed-form curves (lines), one panel per noise pattern.

    points: list of dicts with pattern, ratio, noisy_accuracy, label_precision, label_recall.
    """
    from . import noise

    plt = pyplot()
    patterns = sorted({p["pattern"] for p in points})
    fig, axes = plt.subplots(1, len(patterns), figsize=(5.2 * len(patterns), 4),
                             squeeze=False, constrained_layout=True)
    grid = np.linspace(0, 1, 201)
    curves = (("noisy_accuracy", "test accuracy (noisy labels)", noise.expected_accuracy),
              ("label_precision", "label precision", noise.expected_label_precision),
              ("label_recall", "label recall", noise.expected_label_recall))
    for ax, pattern in zip(axes[0], patterns):
        ts = [noise.transition_matrix(pattern, e, num_classes) for e in grid]
        pts = [p for p in points if p["pattern"] == pattern]
        for (key, label, formula), color in zip(curves, ("C0", "C1", "C2")):
            ax.plot(grid, [formula(t) for t in ts], color=color, label=f"{label} (theory)")
            ax.plot([p["ratio"] for p in pts],
                    [np.nan if p[key] is None else p[key] for p in pts],
                    "o", color=color, label=f"{label} (measured)")
        ax.set(title=f"{pattern} noise", xlabel="noise ratio e", ylim=(-0.02, 1.02))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title)
    utils.save_figure(fig, path)


def plot_incv(records, path, title):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 3.5), constrained_layout=True)
    it = [r["iteration"] for r in records]
    ax.plot(it, [r["label_precision"] for r in records], "o-", label="label precision")
    ax.plot(it, [r["label_recall"] for r in records], "s-", label="label recall")
    ax.set(xlabel="INCV iteration", xticks=it, ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    utils.save_figure(fig, path)


def plot_test_curves(setting_dir, seed, path, title):
    """Test accuracy per epoch of every method found under one setting (same seed)."""
    logs = sorted(glob.glob(os.path.join(setting_dir, "*", f"seed{seed}", "log.jsonl")))
    plot_curves([(log.split(os.sep)[-3], utils.read_jsonl(log)) for log in logs], path, title)


def colours(n):
    """``n`` distinct line colours: matplotlib's tab10 up to 10 (its default cycle), tab20 up
    to 20, beyond that evenly spaced over 'turbo' (a repeated colour would merge two runs)."""
    plt = pyplot()
    if n <= 10:
        return [f"C{k}" for k in range(n)]
    if n <= 20:
        return [plt.get_cmap("tab20")(k) for k in range(n)]
    return [plt.get_cmap("turbo")(x) for x in np.linspace(0.05, 0.95, n)]


def plot_curves(curves, path, title):
    """Clean test accuracy per epoch of several runs in one figure (Fig. 4's layout):
    network 1 solid, network 2 dashed, one colour per run.

    curves: list of (label, log rows), rows with ``epoch`` and ``test_accuracy_model1`` /
    ``test_accuracy_model2``.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2), constrained_layout=True)
    for (label, rows), colour in zip(curves, colours(len(curves))):
        for key, style in (("test_accuracy_model1", "-"), ("test_accuracy_model2", "--")):
            pts = [(r["epoch"], r[key]) for r in rows if r.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts), style, color=colour,
                        label=f"{label} ({key.rsplit('_', 1)[1]})")
    ax.set(xlabel="epoch", ylabel="clean test accuracy", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    utils.save_figure(fig, path)


def plot_seed_curves(panels, path, title):
    """Fig. 4 over seeds: one panel per setting, one colour per method, network 1's clean
    test accuracy per epoch of each seed as a thin line and their mean over seeds bold.

    panels: dict setting -> dict method label -> list (one per seed) of log rows with
    ``epoch`` and ``test_accuracy_model1``. A method keeps its colour in every panel.
    """
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False,
                             constrained_layout=True, sharey=True)
    names = list(dict.fromkeys(m for methods in panels.values() for m in methods))
    colour = dict(zip(names, colours(len(names))))
    for ax, (setting, methods) in zip(axes[0], panels.items()):
        for method, seeds in methods.items():
            by_epoch = {}
            for rows in seeds:
                pts = [(r["epoch"], r["test_accuracy_model1"]) for r in rows
                       if r.get("test_accuracy_model1") is not None]
                if pts:
                    ax.plot(*zip(*pts), "-", color=colour[method], lw=0.7, alpha=0.45)
                for e, a in pts:
                    by_epoch.setdefault(e, []).append(a)
            epochs = sorted(by_epoch)
            ax.plot(epochs, [sum(by_epoch[e]) / len(by_epoch[e]) for e in epochs], "-",
                    color=colour[method], lw=2,
                    label=f"{method} ({len(seeds)} seed{'s' if len(seeds) > 1 else ''})")
        ax.set(xlabel="epoch", title=setting)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("clean test accuracy, network 1")
    fig.suptitle(title, fontsize=9)
    utils.save_figure(fig, path)


def plot_noise_matrices(matrices, path, *, title=""):
    """Side-by-side heat maps of (c, c) matrices, rows: true label, e.g. the empirical T,
    the held-out confusion M and confident learning's estimated P(noisy | true).

    matrices: list of (name, (c, c) array); NaN entries (a class nobody was counted
    into) are left blank.
    """
    plt = pyplot()
    k = len(matrices)
    fig, axes = plt.subplots(1, k, figsize=(4.3 * k + 0.8, 4.2), squeeze=False,
                             constrained_layout=True)
    for ax, (name, m) in zip(axes[0], matrices):
        m = np.asarray(m, float)
        c = len(m)
        im = ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
        ax.set(title=name, xlabel="predicted / noisy label", ylabel="true label",
               xticks=range(c), yticks=range(c))
        if c <= 10:
            for i in range(c):
                for j in range(c):
                    if np.isfinite(m[i, j]):
                        ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center",
                                fontsize=5, color="white" if m[i, j] < 0.5 else "black")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
    fig.suptitle(title)
    utils.save_figure(fig, path)
