"""Progress a person can read: INCV's run and iteration lines, the closing line of a run."""

from noisylabels.progress import (
    Progress,
    done_line,
    format_duration,
    incv_iteration_line,
    incv_pair_line,
    incv_run_line,
)


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_format_duration():
    assert [format_duration(s) for s in (0, 42.4, 185, 7620)] == [
        "0s", "42s", "3m05s", "2h07m"]


def test_incv_run_lines_count_runs_and_estimate_what_remains():
    clock = FakeClock()
    progress = Progress(clock)
    lines = []
    for k in (1, 2, 3, 4):
        for h in (1, 2):
            lines.append(incv_run_line(f"iteration{k}-half{h}", iterations=4, n_train=500,
                                             n_held=250, keep_best=k <= 2, progress=progress))
            clock.now += 60.0  # each run takes a minute
    assert lines[0] == ("INCV iteration 1/4, run 1/2: train on 500, predict 250 "
                        "(best checkpoint); elapsed 0s")
    # after 3 runs of 60 s, 5 remain (this one included): 5 minutes
    assert lines[3] == ("INCV iteration 2/4, run 2/2: train on 500, predict 250 "
                        "(best checkpoint); elapsed 3m00s, about 5m00s left")
    assert lines[7].startswith("INCV iteration 4/4, run 2/2: train on 500, predict 250; ")
    assert lines[7].endswith("elapsed 7m00s, about 1m00s left")


def test_incv_run_line_after_resume_counts_only_the_runs_left():
    clock = FakeClock()
    progress = Progress(clock)
    incv_run_line("iteration3-half1", iterations=4, n_train=9, n_held=9, keep_best=False,
                        progress=progress)
    clock.now = 100.0
    line = incv_run_line("iteration3-half2", iterations=4, n_train=9, n_held=9,
                               keep_best=False, progress=progress)
    assert line.endswith("elapsed 1m40s, about 5m00s left")  # 3 runs of 100 s


def test_incv_pair_line_counts_iterations_and_estimates_what_remains():
    clock = FakeClock()
    progress = Progress(clock)
    tags = [("iteration1-half1", "iteration1-half2"), ("iteration2-half1", "iteration2-half2")]
    first = incv_pair_line(tags[0], iterations=4, n_train=(500, 501), n_held=(250, 249),
                           keep_best=True, progress=progress)
    assert first == ("INCV iteration 1/4, runs 1 and 2 side by side: train on 500 and 501, "
                     "predict 250 and 249 (best checkpoint); elapsed 0s")
    clock.now = 120.0  # one iteration (both runs) took 2 minutes; 3 iterations remain
    second = incv_pair_line(tags[1], iterations=4, n_train=(9, 9), n_held=(9, 9),
                            keep_best=False, progress=progress)
    assert second.endswith("predict 9 and 9; elapsed 2m00s, about 6m00s left")


def test_iteration_and_done_lines_are_formatted_numbers(tmp_path):
    record = {"iteration": 2, "selected": 823, "candidates": 280, "removed": 8,
              "keep_best": True, "label_precision": 0.970123456789, "label_recall": 0.9531}
    assert incv_iteration_line(record, 4) == (
        "INCV iteration 2/4 done: |S| 823, |C| 280, removed 8; LP 0.970, LR 0.953 of S")
    (tmp_path / "cleaned_set.csv").write_text("index,given_label,status,heldout_loss\n")
    summary = {"seconds": 75.3, "estimated_noise_ratio": 0.2301234, "actual_noise_ratio": 0.379,
               "n_train": 1347, "selection": {"selected": 823, "label_precision": 0.97,
                                              "label_recall": 0.9531},
               "test_accuracy": {"model1": 0.912345678, "model2": 0.9, "best": None}}
    assert done_line(summary, str(tmp_path)) == (
        "done in 1m15s; estimated noise 0.230 (actual 0.379); selected 823 of 1347 "
        "(LP 0.970, LR 0.953); test accuracy model1 0.9123, model2 0.9000\n"
        f"  cleaned set: {tmp_path / 'cleaned_set.csv'}")


class _Captured(Exception):
    pass


def test_noisy_cv_prints_no_epoch_line_inside_keras_progress_bar(tmp_path, monkeypatch):
    """--verbose 1 draws Keras' progress bar, whose epoch line ends after the callbacks':
    our per-epoch line (the printer) is passed only with --verbose 0 or 2."""
    import pytest

    from noisylabels import noisy_cv, training

    seen = {}

    def capture(*args, verbose, printer, **kwargs):
        seen[verbose] = printer
        raise _Captured

    monkeypatch.setattr(training, "train_and_predict", capture)
    for verbose in ("1", "2", "0"):
        args = noisy_cv.parse_args(["--dataset", "digits", "--arch", "cnn", "--n_train", "100",
                                    "--epochs", "1", "--verbose", verbose,
                                    "--results_dir", str(tmp_path / verbose)])
        with pytest.raises(_Captured):
            noisy_cv.main(args)
    assert seen[1] is None and seen[2] is print and seen[0] is print
