"""Table 1's other methods, one module each (arXiv:1905.05040, Table 1): a reader finds a
method by its name, as in the Co-learning and DISC codebases.

Each module holds its method's rule (the loss, the weights or the mask, and its per-epoch
state, written once in ``keras.ops``, the formula's source in the docstring) and one
``prepare(ctx)`` that returns an :class:`~noisylabels.algorithms.family.Method`: what the
shared training loop (``coteaching.train_two_networks``) needs to run it. The machinery the
methods share lives in :mod:`.family`: one network with a pluggable per-sample loss
(:class:`~.family.RuleNetwork`, Keras' own ``train_step`` on every backend), two networks
with a pluggable pick (:class:`~.family.TwoNetworks`, one step per backend).

A new method is one short module here and one line in :data:`ALGORITHMS` (with its flags in
:data:`FLAGS`, kept here so that ``--help`` imports no framework).

=============  =================================================================
``fcorrection``  Patrini et al. 2017: a CE network, T estimated from it, a fresh
                 network with the forward loss -log((p T)_y)
``decoupling``   Malach & Shalev-Shwartz 2017: two networks updated on the samples
                 they disagree on
``mentornet``    Jiang et al. 2018, MentorNet PD: per-sample weights from the moving
                 loss percentile and a predefined curriculum
``d2l``          Ma et al. 2018: LID of the features, bootstrapped targets after the
                 turning point
=============  =================================================================
"""

import importlib

import numpy as np

ALGORITHMS = ("fcorrection", "decoupling", "mentornet", "d2l")

# The methods' own flags: (name, type, default, choices or None, help). Defaults are the
# reference code's (deviations in docs/deviations.md). INCV + Co-teaching's own ablation flag
# is here too: resuming, the OOS check and table.py treat every flag listed here as one
# method's (another method's runs ignore it; a run made before the flag existed ran with its
# default).
FLAGS = {
    "incv": [
        ("incv_forget_rate", str, "estimate", ("estimate", "true_ratio", "true_noise_of_s"),
         "INCV + Co-teaching's forget rate: estimate = e_S from INCV's noise estimate e (the "
         "paper); oracle ablations (need clean labels): true_ratio = e_S (and the warm-up) "
         "from the true noise ratio of the training set in place of e; true_noise_of_s = the "
         "true noise ratio of the selected set S itself (1 - LP), the warm-up from e"),
    ],
    "fcorrection": [
        ("fcorrection_T", str, "estimated", ("estimated", "true", "ncv"),
         "F-correction's T: estimated = Patrini et al.'s 97th-percentile estimator on a "
         "cross-entropy network (the Table 1 row); true = the known T (an oracle ablation; "
         "needs clean labels); ncv = the noise ratio from the noisy-validation accuracy "
         "through the paper's formula, in the declared pattern (no clean labels)"),
        ("fcorrection_percentile", float, 97.0, None,
         "the estimator's outlier filter: per class the example at this percentile "
         "('higher' interpolation) of its probability, 100 = argmax (loss-correction's "
         "97)"),
        ("fcorrection_val_split", float, 0.1, None,
         "fraction of the training set held out (noisy labels) to choose each stage's "
         "weights by the lowest validation loss (loss-correction's 0.1)"),
    ],
    "decoupling": [
        ("decoupling_min_batch", float, 0.1, None,
         "Decoupling's floor rho: the loss is divided by max(rho * B, #disagreements) "
         "(UpdateByDisagreement's min_batch_size 0.1)"),
    ],
    "mentornet": [
        ("mentornet_variant", str, "pd", ("pd", "self_paced"),
         "pd = MentorNet PD (predefined curriculum; Jiang et al.'s code); self_paced = one "
         "network keeping its small-loss samples with Co-teaching's forget-rate schedule (the "
         "'MentorNet' of the Co-teaching papers)"),
        ("mentornet_percentile", float, 0.7, None,
         "MentorNet PD's loss percentile p (the flag default that ran: the published "
         "commands misspelt --loss_p_precentile, so 0.75 / 0.5 never reached the script)"),
        ("mentornet_decay", float, 0.5, None,
         "MentorNet PD's moving-average decay of the loss percentile (script default 0.5)"),
        ("mentornet_dropout", str, "0.5,17,0.05,83", None,
         "MentorNet PD's example-dropout table 'rate,count,rate,count,...' over the 100 "
         "percent of training (the PD commands' 0.5,17,0.05,83)"),
    ],
    "d2l": [
        ("d2l_init_epoch", float, 40.0, None,
         "D2L's first epoch at which a turning point may be found, on the paper's 200-epoch "
         "scale (scales with --epochs; the reference's 40)"),
        ("d2l_window", int, 5, None, "D2L's window w of past LID values (reference 5)"),
        ("d2l_rollback", str, "real", ("real", "reference"),
         "at the turning point: real = go back to the previous epoch's weights (the paper's "
         "intent); reference = keep the current weights (the reference code's rollback "
         "loads the checkpoint it has just written: a no-op)"),
    ],
}


def dropout_table(spec):
    """The 100 example-dropout rates, one per percent of training, from 'rate,count,...'
    (``utils.parse_dropout_rate_list``): "0.5,17,0.05,83" -> 0.5 for e < 17, then 0.05."""
    parts = [p for p in str(spec).split(",") if p.strip()]
    if len(parts) % 2:
        raise ValueError(f"--mentornet_dropout needs rate,count pairs, got {spec!r}")
    rates = []
    for rate, count in zip(parts[::2], parts[1::2]):
        rate, count = float(rate), int(count)
        if not (0.0 <= rate <= 1.0 and count >= 0):
            raise ValueError(f"--mentornet_dropout: rates in [0, 1], counts >= 0: {spec!r}")
        rates += [rate] * count
    if len(rates) != 100:
        raise ValueError(f"--mentornet_dropout must cover 100 percent of training, "
                         f"got {len(rates)} in {spec!r}")
    return np.asarray(rates, np.float32)


def load(name):
    """The module of method ``name`` (one of :data:`ALGORITHMS`)."""
    if name not in ALGORITHMS:
        raise ValueError(f"unknown method {name!r}; choose one of {ALGORITHMS}")
    return importlib.import_module(f"{__name__}.{name}")


def add_arguments(parser):
    """Every method's flags (:data:`FLAGS`) on an ``argparse`` parser."""
    for specs in FLAGS.values():
        for name, type_, default, choices, help_ in specs:
            parser.add_argument(f"--{name}", type=type_, default=default, choices=choices,
                                help=help_)
