"""The published figures our tables print beside ours: the paper's Table 1 (CIFAR-10) and the
CIFAR-N paper's rows, each with its source. :mod:`noisylabels.table` reads them (and
re-exports them: ``table.PAPER_CIFAR10``).
"""

# arXiv:1905.05040, Table 1: the paper's CIFAR-10 clean test accuracy (%), mean and ± of 5 runs.
PAPER_RUNS, PAPER_SETTINGS = 5, ("sym 0.2", "sym 0.5", "sym 0.8", "asym 0.4")
PAPER_CIFAR10 = {
    "F-correction": ((85.08, 0.43), (76.02, 0.19), (34.76, 4.53), (83.55, 2.15)),
    "Decoupling": ((86.72, 0.32), (79.31, 0.62), (36.90, 4.61), (75.27, 0.83)),
    "Co-teaching": ((89.05, 0.32), (82.12, 0.59), (16.21, 3.02), (84.55, 2.81)),
    "MentorNet": ((88.36, 0.46), (77.10, 0.44), (28.89, 2.29), (77.33, 0.79)),
    "D2L": ((86.12, 0.43), (67.39, 13.62), (10.02, 0.04), (85.57, 1.21)),
    "INCV + Co-teaching": ((89.71, 0.18), (84.78, 0.33), (52.27, 3.50), (86.04, 0.54)),
}
# CIFAR-N (Wei et al., ICLR 2022, arXiv:2110.12088): clean test accuracy (%) of the methods
# it reports that incv_train.py runs too (cross-entropy = our "standard", Co-teaching), per
# (dataset, label set): method -> (mean, std or None, source). Measured there with
# ResNet-34 on all 50,000 training images for 100 epochs (the CIFAR-N repository's main.py,
# github.com/UCSC-REAL/cifar-10-100n); the epoch reported is the paper's choice, not the
# final one. Only figures confirmed in a second place are listed: Co-teaching from the
# CIFAR-N leaderboard as paperswithcode.com lists it (Co-teaching's page), the worse and
# CIFAR-100N cross-entropy rows (and Co-teaching worse, mean ± std) from a TMLR 2024 study of
# weight averaging, Table 2, which quotes them from Wei et al. (2022). Left out: Co-teaching
# on CIFAR-100N (60.37 on paperswithcode, 60.30 ± 0.27 in that study: unresolved).
_PWC = "paperswithcode.com, Co-teaching, CIFAR-N leaderboard"
_EMA = "Wei et al. 2022 as quoted in a TMLR 2024 EMA study, Table 2"
CIFAR_N_PUBLISHED = {
    ("cifar10n", "aggre"): {"coteaching": (91.20, None, _PWC)},
    ("cifar10n", "random1"): {"coteaching": (90.33, None, _PWC)},
    ("cifar10n", "random2"): {"coteaching": (90.30, None, _PWC)},
    ("cifar10n", "random3"): {"coteaching": (90.15, None, _PWC)},
    ("cifar10n", "worse"): {"coteaching": (83.83, 0.13, _PWC + "; " + _EMA),
                            "standard": (77.69, 1.55, _EMA)},
    ("cifar100n", "noisy"): {"standard": (55.50, 0.66, _EMA)},
}
CIFAR_N_PROTOCOL = "ResNet-34, all 50,000 training images, 100 epochs, epoch chosen by that paper"
