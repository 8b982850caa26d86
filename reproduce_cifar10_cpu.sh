#!/usr/bin/env bash
# The paper's three findings on CIFAR-10 at CPU scale (2 cores), one resumable command.
#
#   ./reproduce_cifar10_cpu.sh [all|theory|scaling|incv|table1|selection|optimizer|
#                               table1-8px|pilots]                            (default: all)
#
# 'table1-8px' is Table 1 in the regime where standard training memorises (README finding 3,
# docs/results-cifar10-cpu.md): ResNet-20 on 20,000 training images downsampled to 8x8, no
# augmentation; the paper's seven rows at sym 0.2 / 0.5 / 0.8 and asym 0.4, seeds 0-2, plus
# INCV + Co-teaching with an oracle forget rate; two processes side by side with one thread
# each, or LAUNCHER=slurm: job arrays through slurm.py (e.g. the one-node cluster of
# .ci/slurm_up.sh).
#
# 'pilots' (not part of 'all') runs the pilots that looked for Table 1's CPU-scale regime
# (docs/table1-regime.md), without augmentation at sym 0.5: standard training and one INCV
# iteration with ResNet-20 on 5,000 images, then standard training of the cnn, cnn_x2 and
# ResNet-20 on 10,000-20,000 images at 16x16 and 8x8; each to its last epoch (several of
# the recorded pilots were stopped earlier); then INCV's first iteration in the table1-8px
# regime with augmentation, sym 0.8 and 0.5.
#
# Each part but table1-8px (about 6.5 hours) is sized for at most ~3 hours on 2 CPU cores (see
# docs/results-cifar10-cpu.md for the measured seconds per epoch and the wall time of each part).
# Re-running continues where it stopped: noisy_cv.py skips finished points (--skip_existing),
# incv_train.py also continues an unfinished run from its last epoch / INCV iteration
# (--resume). Results go to $OUT (default results/cifar10-cpu); then
#   python table.py results/cifar10-cpu
# prints the tables.
#
# Environment: PYTHON (default .venv/bin/python, else python3), DATA_DIR (the folder holding
# cifar-10-batches-py; default data), OUT, LAUNCHER (table1-8px: local or slurm). A run on
# a copy that is not the official archive
# (md5 check) says so in its output, config.json and summary.json.
set -euo pipefail
cd "$(dirname "$0")"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
DATA_DIR=${DATA_DIR:-data}
OUT=${OUT:-results/cifar10-cpu}
PART=${1:-all}
case "$PART" in all|theory|scaling|incv|table1|selection|optimizer|table1-8px|pilots) ;; *)
    echo "error: unknown part '$PART': choose all, theory, scaling, incv, table1, selection, optimizer, table1-8px or pilots" >&2
    exit 2;;
esac
LAUNCHER=${LAUNCHER:-local}
case "$LAUNCHER" in local|slurm) ;; *)
    echo "error: LAUNCHER='$LAUNCHER': choose local or slurm" >&2
    exit 2;;
esac

# The scale (see docs/results-cifar10-cpu.md for the measurements behind it): a
# seeded stratified subset of 5,000 training images (the paper: all 50,000).
# Theory: ResNet-20 (the paper: ResNet-110), which fits the noisy labels within the budget.
# INCV and Co-teaching: the small `cnn` (the paper: ResNet-32). ResNet-20 trained 15 epochs
# on 2,500 images classified held-out images at 0.14 in inference mode (most likely its
# BatchNorm moving averages, momentum 0.99, lag the weights over so few steps), so INCV's
# first iteration kept 688 samples at LP 0.62, LR 0.17; the `cnn` (BatchNorm momentum 0.9)
# reached 0.28-0.35 after 3 epochs.
N_TRAIN=5000
THEORY_ARCH=resnet20
THEORY_EPOCHS=25        # Fig. 1-2: one network per point, trained on half of N_TRAIN
THEORY_AUGMENT=none     # the theory's regime needs a network that fits the noisy labels
ARCH=cnn                # Fig. 3, Table 1, the selection and optimizer comparisons
INCV_EPOCHS=20          # each INCV training run
EPOCHS=30               # Table 1: Co-teaching / standard epochs
COMMON=(--dataset cifar10 --data_dir "$DATA_DIR" --no_download --verbose 2)
THEORY=("${COMMON[@]}" --arch "$THEORY_ARCH" --epochs "$THEORY_EPOCHS" --augment "$THEORY_AUGMENT")
TRAIN=("${COMMON[@]}" --arch "$ARCH")

run() { echo "+ $*"; "$@"; }

# --resume continues a started run and refuses a grid with none started, so it is passed only
# when one of the runs has its config.json: started DIR PATTERN RATIO METHOD...
started() {
    local dir=$1 pattern=$2 ratio=$3 method
    shift 3
    for method in "$@"; do
        if [[ -f $dir/cifar10/$pattern/$ratio/$method/seed0/config.json ]]; then
            echo --resume
            return
        fi
    done
}

if [[ $PART == all || $PART == theory ]]; then
    # Fig. 1-2: held-out accuracy, LP, LR vs. the closed forms, both patterns.
    run "$PYTHON" noisy_cv.py "${THEORY[@]}" --n_train "$N_TRAIN" \
        --noise_pattern sym asym --noisy_ratio 0.2 0.4 0.5 0.6 0.8 \
        --results_dir "$OUT/theory" --skip_existing
fi

if [[ $PART == all || $PART == scaling ]]; then
    # Scaling: the gap to the theory as the training set grows (sym 0.5).
    for n in 2000 10000; do
        run "$PYTHON" noisy_cv.py "${THEORY[@]}" --n_train "$n" --noise_pattern sym --noisy_ratio 0.5 \
            --results_dir "$OUT/theory-n$n" --skip_existing
    done
fi

if [[ $PART == all || $PART == incv ]]; then
    # Fig. 3: LP / LR of S per INCV iteration and the noise estimate (selection only).
    for setting in "sym 0.5" "asym 0.4"; do
        set -- $setting
        run "$PYTHON" incv_train.py "${TRAIN[@]}" --n_train "$N_TRAIN" \
            --incv_epochs "$INCV_EPOCHS" --method incv --incv_only \
            --noise_pattern "$1" --noisy_ratio "$2" --results_dir "$OUT/incv" \
            --skip_existing $(started "$OUT/incv" "$1" "$2" incv)
    done
fi

SELECTION_CSV="$OUT/incv/cifar10/sym/0.5/incv/seed0/cifar10_sym0.5_INCV_results.csv"
if [[ $PART == all || $PART == table1 || $PART == selection ]] && [[ ! -f $SELECTION_CSV ]]; then
    echo "error: $SELECTION_CSV is missing: run the incv part first" >&2
    exit 2
fi

if [[ $PART == all || $PART == table1 ]]; then
    # Table 1: INCV + Co-teaching (on the INCV part's selection) vs. Co-teaching vs. standard.
    run "$PYTHON" incv_train.py "${TRAIN[@]}" --n_train "$N_TRAIN" --epochs "$EPOCHS" \
        --method incv --incv_results "$SELECTION_CSV" --noise_pattern sym --noisy_ratio 0.5 \
        --results_dir "$OUT/table1" --skip_existing $(started "$OUT/table1" sym 0.5 incv)
    run "$PYTHON" incv_train.py "${TRAIN[@]}" --n_train "$N_TRAIN" --epochs "$EPOCHS" \
        --incv_epochs "$INCV_EPOCHS" --method coteaching standard --noise_pattern sym \
        --noisy_ratio 0.5 --results_dir "$OUT/table1" --skip_existing \
        $(started "$OUT/table1" sym 0.5 coteaching standard)
fi

if [[ $PART == all || $PART == selection ]]; then
    # The authors' Co-teaching selection vs. ours (fused) on the same selection and seed.
    run "$PYTHON" incv_train.py "${TRAIN[@]}" --n_train "$N_TRAIN" --epochs "$EPOCHS" \
        --method incv --incv_results "$SELECTION_CSV" --selection authors \
        --noise_pattern sym --noisy_ratio 0.5 --results_dir "$OUT/table1-authors" \
        --skip_existing $(started "$OUT/table1-authors" sym 0.5 incv)
    # Table 1 with both selections, and their test-accuracy curves overlaid.
    run "$PYTHON" table.py "$OUT/table1" "$OUT/table1-authors" --out "$OUT/table1.md" \
        --curves "$OUT/table1_curves.png"
fi

if [[ $PART == all || $PART == optimizer ]]; then
    # INCV with the authors' optimizer behaviour (Adam state carried from run to run, as their
    # load_model of the best checkpoint did) beside the incv part's fresh optimizer, sym 0.5;
    # its first 2 iterations (4 runs), the part where the two behaviours differ most.
    run "$PYTHON" incv_train.py "${TRAIN[@]}" --n_train "$N_TRAIN" \
        --incv_epochs "$INCV_EPOCHS" --incv_iterations 2 --method incv --incv_only \
        --incv_optimizer carry \
        --noise_pattern sym --noisy_ratio 0.5 --results_dir "$OUT/incv-carry" \
        --skip_existing $(started "$OUT/incv-carry" sym 0.5 incv)
fi

if [[ $PART == all || $PART == table1-8px ]]; then
    # Table 1 where standard training memorises (the pilots: docs/table1-regime.md): 8x8
    # images cut ResNet-20's cost per image (10.1 s per epoch of 20,000 vs 23.0 at 16x16 in the
    # pilots), so 20,000 images fit the budget; without augmentation it fits the noisy labels
    # and its test accuracy peaks and falls. Epochs: the paper's 200 / 50 cut to 30 / 20 (the
    # lr schedules scale with them), INCV's iterations 4 cut to 2. The paper's seven rows at its
    # four columns, seeds 0-2 (84 runs, one thread each); then INCV's selection with an oracle
    # forget rate (the true noise ratio of S in place of the one from e) at every column (INCV +
    # Co-teaching beat Co-teaching in none beyond the seeds' spread).
    #   LAUNCHER=local (default): two processes side by side (--task 0/1 --num_tasks 2), one
    #   grid after the other, then the table;
    #   LAUNCHER=slurm: one job array per grid through slurm.py (one unit of setting x seed per
    #   task, two at a time on a 2-core node); when they have ended, the table.py command it
    #   prints (re-running the part before they end would submit the queued units again).
    T1=("${COMMON[@]}" --arch resnet20 --image_size 8 --n_train 20000 --augment none
        --epochs 30 --incv_epochs 20 --incv_iterations 2 --seed 0 1 2
        --skip_existing --intra_op_threads 1 --inter_op_threads 1)
    GRID=(--method standard fcorrection decoupling coteaching mentornet d2l incv
          --results_dir "$OUT/table1-8px")
    ORACLE=(--method incv --incv_forget_rate true_noise_of_s --results_dir "$OUT/table1-8px-oracle")
    mkdir -p "$OUT/table1-8px"
    table1_job() {  # table1_job NAME FLAGS...: two local processes, or one SLURM job array
        local name=$1 k i failed=0 pids=() logs=()
        shift
        if [[ $LAUNCHER == slurm ]]; then
            run "$PYTHON" slurm.py --cpus_per_task 1 --mem 6G --job_name "table1-8px-$name" \
                incv_train.py "${T1[@]}" "$@"
            return
        fi
        for k in 0 1; do
            logs+=("$OUT/table1-8px/$name-task$k.log")
            # --resume: a task of a split grid continues its started runs, starts the rest
            run "$PYTHON" incv_train.py "${T1[@]}" "$@" --task "$k" --num_tasks 2 --resume \
                >> "${logs[-1]}" 2>&1 &  # appended: a re-run keeps the earlier log
            pids+=($!)
        done
        for i in "${!pids[@]}"; do
            wait "${pids[$i]}" || { echo "error: ${logs[$i]%.log} failed: see ${logs[$i]}" >&2; failed=1; }
        done
        [[ $failed == 0 ]] || exit 1
    }
    # the grid first (sym 0.8, the paper's widest gap, leads), the ablation after
    table1_job sym "${GRID[@]}" --noise_pattern sym --noisy_ratio 0.8 0.2 0.5
    table1_job asym "${GRID[@]}" --noise_pattern asym --noisy_ratio 0.4
    table1_job oracle-sym "${ORACLE[@]}" --noise_pattern sym --noisy_ratio 0.5 0.8 0.2
    table1_job oracle-asym "${ORACLE[@]}" --noise_pattern asym --noisy_ratio 0.4
    if [[ $LAUNCHER == slurm ]]; then
        echo "submitted: squeue shows them; when they are done, run this part again (it submits"
        echo "only what is left) or: $PYTHON table.py $OUT/table1-8px $OUT/table1-8px-oracle"
    fi
    if [[ $LAUNCHER == local ]]; then
        run "$PYTHON" table.py "$OUT/table1-8px" "$OUT/table1-8px-oracle" \
            --out "$OUT/table1-8px/table.md" --curves "$OUT/table1-8px/curves.png"
    fi
fi

if [[ $PART == pilots ]]; then
    # Table 1's regime (docs/table1-regime.md): does standard training on sym 0.5 fit the noisy
    # labels, does its clean test accuracy peak and fall, and is INCV's first selection clean?
    # ResNet-20 without augmentation (it fits 2,500 noisy images in 25 epochs, theory part),
    # 5,000 images; float32 vs mixed_bfloat16 (the CPU's AVX-512 BF16), batch 128 vs 32
    # (ResNet-20's BatchNorm momentum 0.99 over 40 vs 157 steps per epoch).
    PILOT=("${COMMON[@]}" --arch resnet20 --augment none --n_train "$N_TRAIN" \
        --noise_pattern sym --noisy_ratio 0.5)
    BF16=(--precision mixed_bfloat16)
    pilot() {  # pilot NAME METHOD FLAGS...: one pilot in $OUT/pilots/NAME
        local name=$1 method=$2
        shift 2
        run "$PYTHON" incv_train.py "${PILOT[@]}" --method "$method" "$@" \
            --results_dir "$OUT/pilots/$name" --skip_existing \
            $(started "$OUT/pilots/$name" sym 0.5 "$method")
    }
    pilot p1-r20-none-n5k-e30 standard --epochs 30
    pilot p2-r20-none-n5k-e30-bf16 standard --epochs 30 "${BF16[@]}"
    pilot p4-r20-none-n5k-e30-bs32-bf16 standard --epochs 30 --batch_size 32 "${BF16[@]}"
    pilot p5-incv1-r20-none-n5k-ie20-bs32-bf16 incv --incv_only --incv_iterations 1 \
        --incv_epochs 20 --batch_size 32 "${BF16[@]}"
    # Smaller images for more of them (--image_size: CIFAR downsampled by averaging blocks),
    # standard training only, one thread each (they ran two at a time); the flags given here
    # come after PILOT's, and argparse keeps the last.
    small() {  # small NAME ARCH SIZE N EPOCHS
        pilot "$1" standard --arch "$2" --image_size "$3" --n_train "$4" --epochs "$5" \
            --intra_op_threads 1 --inter_op_threads 1
    }
    small p7-cnn-16px-n10k-e40 cnn 16 10000 40
    small p8-r20-16px-n10k-e40 resnet20 16 10000 40
    small p9-cnnx2-16px-n10k-e40 cnn_x2 16 10000 40
    small p10-r20-16px-n20k-e30 resnet20 16 20000 30
    small p11-r20-8px-n20k-e20 resnet20 8 20000 20
    # INCV's first iteration in the table1-8px regime with shift + flip for its networks (the
    # grid trains them without), sym 0.8 and 0.5: is S cleaner? (the grid's INCV runs, seed 0,
    # give the same iteration without augmentation)
    P12="$OUT/pilots/p12-incv1-r20-8px-n20k-aug"
    run "$PYTHON" incv_train.py "${COMMON[@]}" --arch resnet20 --image_size 8 --n_train 20000 \
        --augment standard --incv_epochs 20 --incv_iterations 1 --method incv --incv_only \
        --seed 0 --intra_op_threads 1 --inter_op_threads 1 --noise_pattern sym \
        --noisy_ratio 0.8 0.5 --results_dir "$P12" --skip_existing $(started "$P12" sym 0.8 incv)
    run "$PYTHON" table.py "$OUT/pilots"
fi

echo "done: $PYTHON table.py $OUT"
