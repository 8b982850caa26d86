#!/usr/bin/env bash
# The GPU machine's procedure (docs/backends.md "A GPU"), repeated on this CPU: `make
# gpu-check-sim` runs it. Needs pip to reach a package index; 3-6 minutes on 2 CPU cores.
#
#   1. a fresh venv holding only packages the GPU machine's image holds (JAX's CPU build,
#      numpy, scikit-learn, matplotlib, pillow, absl-py, h5py, rich, ml-dtypes, packaging,
#      typing-extensions and what they pull in, at requirements.txt's pins), checked against
#      the image's list below and for the absence of Keras, namex, optree, TensorFlow,
#      PyTorch and cleanlab;
#   2. `make gpu-wheels` for this venv's Python into $SIM/whl, and those wheels installed with
#      `pip install --no-index --no-deps --target $SIM/site`, as on the GPU machine;
#   3. the documented command, `PYTHONPATH=$SIM/site python tests/gpu_check.py --cifar ...
#      --out $SIM/out`, on a generated JPEG tarball (a dry run: no GPU here);
#   4. every stage that ran must have measured: a wheel missing from GPU_WHEELS fails here.
#
# PYTHON: the interpreter the venv is made from (default python3; the GPU machine's is 3.12,
# e.g. PYTHON=python3.12). SIM_DIR: where (default build/gpu-check-sim, ignored by git; it is
# replaced on every run).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
SIM=${SIM_DIR:-$ROOT/build/gpu-check-sim}
# The GPU machine's image, the names that matter here (it holds many more ML packages, but
# not keras, namex, optree, tensorflow or cleanlab). torch is in it too, left out here: the
# sim proves the Keras-on-JAX procedure, and a CPU torch would only add its download.
IMAGE="absl-py chex cloudpickle contourpy cycler etils filelock flax fonttools fsspec h5py jax
jaxlib joblib kiwisolver markdown-it-py matplotlib mdurl ml-dtypes msgpack numpy opt-einsum
optax packaging pillow protobuf pygments pyparsing python-dateutil pytest rich scikit-learn
scipy six threadpoolctl torch typing-extensions tensorboard wrapt"
# What the project needs of it (their own requirements come with them).
NEEDS="jax jaxlib numpy scipy scikit-learn matplotlib pillow absl-py h5py rich ml-dtypes
packaging typing-extensions"

# Only a folder this script made (or a new one) is emptied: SIM_DIR=. must not wipe a clone.
if [[ -e "$SIM" && ! -f "$SIM/.gpu_check_sim" ]]; then
    echo "error: SIM_DIR $SIM exists and was not made by gpu_check_sim.sh: choose a new folder" >&2
    exit 2
fi
rm -rf "$SIM"
mkdir -p "$SIM"
touch "$SIM/.gpu_check_sim"
start=$(date +%s)
echo "== 1. a venv holding only the image's packages ($PYTHON, $SIM/venv)"
"$PYTHON" -m venv "$SIM/venv"
VPY=$SIM/venv/bin/python
# requirements.txt as constraints: its pins for what is installed, nothing else installed
# shellcheck disable=SC2086
"$VPY" -m pip install --quiet --only-binary=:all: -c "$ROOT/requirements.txt" $NEEDS
IMAGE="$IMAGE" NEEDS="$NEEDS" "$VPY" - <<'EOF'
import os
import re
from importlib.metadata import distributions

norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()  # noqa: E731
image, needs = set(os.environ["IMAGE"].split()), set(os.environ["NEEDS"].split())
have = {norm(d.metadata["Name"]) for d in distributions()} - {"pip", "setuptools"}
if needs - image:
    raise SystemExit(f"asked for packages the GPU machine's image lacks: {needs - image}")
for name in ("keras", "namex", "optree", "tensorflow", "torch", "cleanlab"):
    if name in have:
        raise SystemExit(f"the sim venv holds {name}: the GPU machine's image does not")
# The rest came in as requirements of the image's packages (these versions' requirements:
# scikit-learn 1.9's narwhals, for one), so an image holding those packages holds them too.
print(f"{len(have)} packages: {' '.join(sorted(have & image))}; pulled in by those: "
      f"{' '.join(sorted(have - image)) or 'none'}")
EOF

GPU_PY=$("$VPY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
echo "== 2. make gpu-wheels for Python $GPU_PY, installed with --target"
make -C "$ROOT" --no-print-directory gpu-wheels PYTHON="$VPY" GPU_PY="$GPU_PY" \
    WHEEL_DIR="$SIM/whl"
"$VPY" -m pip install --quiet --no-index --no-deps --target "$SIM/site" "$SIM"/whl/*.whl

echo "== 3. the documented command (a dry run here), on a generated JPEG tarball"
# 2,000 training and 500 test images of the JPEG layout, made by the sim venv itself
PYTHONPATH="$ROOT/tests" "$VPY" -c "import gpu_check; \
gpu_check.write_jpeg_tarball('$SIM/cifar10-jpeg.tar.gz', 2000, 500)"
t0=$(date +%s)
rc=0
(cd "$ROOT" && env -u PYTHONHOME PYTHONPATH="$SIM/site" "$VPY" tests/gpu_check.py \
    --cifar "$SIM/cifar10-jpeg.tar.gz" --out "$SIM/out") || rc=$?
echo "gpu_check.py: exit $rc after $(($(date +%s) - t0)) s"

echo "== 4. every stage that ran measured"
"$VPY" - "$SIM/out/gpu_check.json" <<'EOF'
import json
import sys

r = json.load(open(sys.argv[1]))
bad = [f"{s['stage']}: {s['status']} ({s.get('error')})" for s in r["stages"]
       if s["status"] in ("failed", "partial")]
ran = [s["stage"] for s in r["stages"] if s["status"] == "ok"]
if r["missing_modules"]:
    bad.append(f"modules missing: {r['missing_modules']} (add them to GPU_WHEELS?)")
if bad or "training" not in ran or not any(s.startswith("speed jax") for s in ran):
    raise SystemExit("the simulated GPU procedure did not run to the end: "
                     + ("; ".join(bad) or f"only {ran} measured"))
print(f"ok: {', '.join(ran)} measured, no module missing")
EOF
[ "$rc" -eq 0 ] || exit "$rc"
echo "gpu-check-sim: the procedure ran to the end in $(($(date +%s) - start)) s;" \
    "results in $SIM/out"
