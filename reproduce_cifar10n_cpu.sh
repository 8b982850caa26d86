#!/usr/bin/env bash
# CIFAR-10N (human label noise) at CPU scale, one resumable command:
#
#   ./reproduce_cifar10n_cpu.sh [LABEL_SET...]      (default: worse aggre)
#
# Two parts per label set, each resumable and skipping finished runs:
#   select: INCV, confident learning (cl) and the noisy-CV rule (ncv), selection only
#           (--incv_only; cl and ncv judge INCV's first-iteration out-of-sample predictions):
#           |S|, LP, LR, every noise estimate, the held-out confusion vs the empirical T;
#   train:  the modified Co-teaching on INCV's selection (--incv_results) and standard
#           training; with ALL_TRAIN=1 also Co-teaching on the cl / ncv selections and plain
#           Co-teaching (Han et al. 2018).
# Results go to $OUT (default results/cifar10n-cpu); `python table.py $OUT/train` prints the
# test accuracies beside the CIFAR-N paper's published rows, `python table.py $OUT/select`
# the selections. See docs/cifar-n.md for the measured numbers.
#
# Environment: PYTHON (default .venv/bin/python, else python3), DATA_DIR (the folder holding
# cifar-10-batches-py and CIFAR-10_human.pt; default data), OUT, PARTS (default
# "select train"), ALL_TRAIN (0/1, default 0).
set -euo pipefail
cd "$(dirname "$0")"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
DATA_DIR=${DATA_DIR:-data}
OUT=${OUT:-results/cifar10n-cpu}
PARTS=${PARTS:-select train}
ALL_TRAIN=${ALL_TRAIN:-0}
SETS=("$@")
[[ ${#SETS[@]} -gt 0 ]] || SETS=(worse aggre)
for s in "${SETS[@]}"; do
    case "$s" in worse|aggre|random1|random2|random3) ;; *)
        echo "error: unknown label set '$s': choose worse, aggre, random1, random2 or random3" >&2
        exit 2;;
    esac
done

# The scale, sized for 2 CPU cores shared with other jobs (a load of ~16 measured while
# choosing it): a seeded stratified 4,000-image subset (the CIFAR-N paper: all 50,000), the
# small `cnn` (the INCV paper: ResNet-32), INCV 2 iterations of 5-epoch runs, 8 epochs of
# Co-teaching / standard training.
N_TRAIN=4000
ARCH=cnn
INCV_EPOCHS=5
INCV_ITERATIONS=2
EPOCHS=8
COMMON=(--dataset cifar10n --data_dir "$DATA_DIR" --no_download --verbose 2 --arch "$ARCH"
        --n_train "$N_TRAIN" --incv_epochs "$INCV_EPOCHS" --incv_iterations "$INCV_ITERATIONS")

run() { echo "+ $*"; "$@"; }

# --resume continues a started run and refuses a grid with none started: passed only when
# one of the runs has its config.json. started DIR LABEL_SET METHOD...
started() {
    local dir=$1 set=$2 method
    shift 2
    for method in "$@"; do
        if [[ -f $dir/cifar10n/$set/$method/seed0/config.json ]]; then
            echo --resume
            return
        fi
    done
}

for s in "${SETS[@]}"; do
    if [[ " $PARTS " == *" select "* ]]; then
        run "$PYTHON" incv_train.py "${COMMON[@]}" --label_set "$s" --method incv cl ncv \
            --incv_only --results_dir "$OUT/select" --skip_existing \
            $(started "$OUT/select" "$s" incv cl ncv)
    fi
    if [[ " $PARTS " == *" train "* ]]; then
        sel=$OUT/select/cifar10n/$s/incv/seed0/cifar10n_${s}_INCV_results.csv
        run "$PYTHON" incv_train.py "${COMMON[@]}" --label_set "$s" --epochs "$EPOCHS" \
            --method incv --incv_results "$sel" --results_dir "$OUT/train" --skip_existing \
            $(started "$OUT/train" "$s" incv)
        run "$PYTHON" incv_train.py "${COMMON[@]}" --label_set "$s" --epochs "$EPOCHS" \
            --method standard --results_dir "$OUT/train" --skip_existing \
            $(started "$OUT/train" "$s" standard)
        if [[ $ALL_TRAIN == 1 ]]; then
            run "$PYTHON" incv_train.py "${COMMON[@]}" --label_set "$s" --epochs "$EPOCHS" \
                --method cl ncv coteaching --results_dir "$OUT/train-all" --skip_existing \
                $(started "$OUT/train-all" "$s" cl ncv coteaching)
        fi
    fi
done
