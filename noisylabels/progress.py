"""Progress a person can read: durations, an estimate of the time left, and the lines that
INCV and incv_train.py print (formatted numbers, never raw dicts)."""

import os
import time


def format_duration(seconds):
    """Seconds as a person reads them: '42s', '3m05s', '2h07m'."""
    s = int(round(max(0.0, float(seconds))))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """Elapsed time and a linear estimate of what remains, over steps of similar length.

    ``mark(remaining)`` is called as each step starts, with the number of steps left
    including that one; the estimate is the mean length of the steps finished in this
    process times ``remaining`` (none before the first step has finished).
    """

    def __init__(self, clock=time.monotonic):
        self.clock, self.t0, self.finished = clock, None, 0

    def mark(self, remaining):
        now = self.clock()
        if self.t0 is None:
            self.t0 = now
        else:
            self.finished += 1
        elapsed = now - self.t0
        if not self.finished:
            return f"elapsed {format_duration(elapsed)}"
        left = elapsed / self.finished * remaining
        return f"elapsed {format_duration(elapsed)}, about {format_duration(left)} left"


def incv_run_line(tag, *, iterations, n_train, n_held, keep_best, progress):
    """The line printed as an INCV training run starts (``tag`` as incv_select names the
    runs, "iteration<k>-half<h>"), e.g. "INCV iteration 2/4, run 1/2: train on 812,
    predict 301 (best checkpoint); elapsed 3m05s, about 9m15s left"."""
    head, remaining = tag, 1
    if tag.startswith("iteration") and "-half" in tag:
        k, h = (int(x) for x in tag[len("iteration"):].split("-half"))
        head, remaining = (f"iteration {k}/{iterations}, run {h}/2",
                           2 * (iterations - k) + (2 - h) + 1)
    return (f"INCV {head}: train on {n_train}, predict {n_held}"
            f"{' (best checkpoint)' if keep_best else ''}; {progress.mark(remaining)}")


def incv_pair_line(tags, *, iterations, n_train, n_held, keep_best, progress):
    """The line printed as an iteration's two INCV runs start side by side (``tags`` as
    incv_select names them), e.g. "INCV iteration 2/4, runs 1 and 2 side by side: train on
    812 and 813, predict 301 and 300 (best checkpoint); elapsed 6m10s, about 12m20s left"
    (the estimate counts iterations, each one step of ``progress``)."""
    k = int(tags[0][len("iteration"):].split("-half")[0])
    return (f"INCV iteration {k}/{iterations}, runs 1 and 2 side by side: train on "
            f"{n_train[0]} and {n_train[1]}, predict {n_held[0]} and {n_held[1]}"
            f"{' (best checkpoint)' if keep_best else ''}; {progress.mark(iterations - k + 1)}")


def _num(value, digits=3):
    return "n/a" if value is None else f"{value:.{digits}f}"


def incv_iteration_line(record, iterations):
    """One INCV iteration's record (incv.incv_select) as a line of formatted numbers."""
    text = (f"INCV iteration {record['iteration']}/{iterations} done: |S| {record['selected']}"
            f", |C| {record['candidates']}, removed {record['removed']}")
    if "label_precision" in record:
        text += (f"; LP {_num(record['label_precision'])}, "
                 f"LR {_num(record['label_recall'])} of S")
    return text


def done_line(summary, out):
    """The line closing an incv_train.py run: formatted numbers and the files to look at."""
    parts = [f"done in {format_duration(summary.get('seconds', 0))}"]
    if summary.get("estimated_noise_ratio") is not None:
        parts.append(f"estimated noise {summary['estimated_noise_ratio']:.3f} (actual "
                     f"{_num(summary.get('actual_noise_ratio'))})")
    sel = summary.get("selection")
    if sel:
        parts.append(f"selected {sel['selected']} of {summary.get('n_train')} (LP "
                     f"{_num(sel.get('label_precision'))}, LR {_num(sel.get('label_recall'))})")
    acc = summary.get("test_accuracy")
    if acc:
        parts.append("test accuracy " + ", ".join(
            f"{k} {v:.4f}" for k, v in acc.items() if v is not None))
    text = "; ".join(parts)
    cleaned = os.path.join(out, "cleaned_set.csv")
    if os.path.isfile(cleaned):
        text += f"\n  cleaned set: {cleaned}"
    return text
