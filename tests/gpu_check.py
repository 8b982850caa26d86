"""The GPU check: on a machine with an NVIDIA GPU, in about 6 minutes, how fast every training
path runs on each installed Keras backend (fp32 and mixed precision), plain PyTorch's
ResNet-32 on the same GPU, the input pipeline's own rate, and one real CIFAR-10 training of
ResNet-32 (``incv_train.py --method standard``) for as many epochs as ~3 minutes allow, with
its test accuracy per epoch. One JSON file and a printed table.

On a GPU machine without network and without TensorFlow (JAX and/or PyTorch with CUDA, numpy,
scikit-learn, matplotlib, pillow present), from a clone of this repository:

    # 1. where pip reaches a package index: the pure-Python wheels (and optree's) it lacks
    make gpu-wheels            # keras, namex, optree for CPython 3.12 into .whl/
    # 2. copy the clone (with .whl/) and the CIFAR-10 images to the GPU machine, then there:
    python3 -m pip install --no-index --no-deps --target /tmp/site .whl/*.whl
    PYTHONPATH=/tmp/site python3 tests/gpu_check.py --cifar cifar-10-python.tar.gz

``--cifar`` takes the official ``cifar-10-python.tar.gz``, a folder holding
``cifar-10-batches-py``, or a tarball of JPEG files ``train/NNNNN_L.jpg`` /
``test/NNNNN_L.jpg`` (NNNNN = position, L = label; training images in the official order),
converted to the python layout in a temporary folder. Without ``--cifar`` the real training
is skipped. Results: ``--out`` (default results/gpu_check/gpu_check.json).

Without a GPU it says so and runs as a dry run (tiny sizes, the small ``cnn``, a few
minutes on 2 CPU cores; tests/test_gpu_check.py runs it so):

    .venv/bin/python tests/gpu_check.py --backends jax --cifar fake.tar.gz

Every stage has its share of ``--budget_s`` (default 340 s, 150 of them for the
training); a stage that would not fit is skipped and listed as skipped, never cut off
silently. The speed children are tests/backend_bench.py's (each backend and precision in
its own process).
"""

import argparse
import glob
import importlib.util
import io
import json
import os
import pickle
import re
import subprocess
import sys
import tarfile
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import backend_bench  # noqa: E402  (tests/ is not a package)

BACKENDS = ("jax", "torch", "tensorflow")
PRECISIONS = ("float32", "mixed_bfloat16")
SPEED_PATHS = ("one", "pair", "coteaching", "pipeline")
# The GPU sizes and the dry run's (the dry run proves the plumbing, not the speed).
GPU_SIZES = {"images": 5120, "rounds": 2, "arch": "resnet32", "max_epochs": 200}
DRY_SIZES = {"images": 128, "rounds": 1, "arch": "cnn", "max_epochs": 2}
PEER_S = 30  # plain PyTorch's share of the budget (no compilation: seconds on a GPU)
# JPEG file names in a tarball of the offline copy's layout.
JPEG_NAME = re.compile(r"(?:^|/)(train|test)/(\d+)_(\d)\.jpe?g$")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS,
                   help="Keras backends to measure, those installed (default: all three)")
    p.add_argument("--precisions", nargs="+", default=list(PRECISIONS),
                   choices=("float32", "mixed_bfloat16", "mixed_float16"),
                   help="Keras dtype policies to measure each backend at")
    p.add_argument("--cifar", type=str, default=None,
                   help="CIFAR-10 for the real training: cifar-10-python.tar.gz, a folder "
                        "holding cifar-10-batches-py, or a tarball of train/NNNNN_L.jpg and "
                        "test/NNNNN_L.jpg files; without it the training is skipped")
    p.add_argument("--train_backend", type=str, default="auto", choices=("auto",) + BACKENDS,
                   help="backend of the real training (auto: the fastest one-network fp32 rate)")
    p.add_argument("--train_s", type=float, default=150.0,
                   help="seconds of the budget for the real training (epochs are chosen "
                        "from the measured rate to fit)")
    p.add_argument("--budget_s", type=float, default=340.0,
                   help="the whole check's wall-time budget in seconds")
    p.add_argument("--dry_run", type=str, default="auto", choices=("auto", "on", "off"),
                   help="tiny sizes (auto: when no GPU is found)")
    p.add_argument("--out", type=str,
                   default=os.path.join(ROOT, "results", "gpu_check", "gpu_check.json"))
    return p.parse_args(argv)


# ---------------------------------------------------------------------------- environment

def installed(name):
    return importlib.util.find_spec(name) is not None


def find_gpu():
    """(name or None, how it was found): nvidia-smi first (no framework loaded here)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                              "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=30)
        line = out.stdout.strip().splitlines()[:1]
        if out.returncode == 0 and line:
            return line[0], "nvidia-smi"
    except (OSError, subprocess.TimeoutExpired):
        pass
    return None, "nvidia-smi not found or no GPU listed"


def versions():
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for name in ("keras", "jax", "jaxlib", "torch", "tensorflow", "numpy"):
        if installed(name):
            try:
                out[name] = version(name)
            except PackageNotFoundError:  # a module without distribution metadata
                out[name] = "installed"
    return out


# ------------------------------------------------------------------------------ CIFAR-10

def _write_python_layout(folder, x_train, y_train, x_test, y_test):
    """The official python layout (uint8 rows of R, G, B planes, 5 training batches)."""
    os.makedirs(folder, exist_ok=True)
    rows = lambda x: x.transpose(0, 3, 1, 2).reshape(len(x), -1)  # noqa: E731
    parts = np.array_split(np.arange(len(x_train)), 5)
    for i, idx in enumerate(parts, 1):
        with open(os.path.join(folder, f"data_batch_{i}"), "wb") as f:
            pickle.dump({b"data": rows(x_train[idx]), b"labels": y_train[idx].tolist(),
                         b"batch_label": f"training batch {i} of 5".encode()}, f, protocol=2)
    with open(os.path.join(folder, "test_batch"), "wb") as f:
        pickle.dump({b"data": rows(x_test), b"labels": y_test.tolist(),
                     b"batch_label": b"testing batch 1 of 1"}, f, protocol=2)


def jpeg_tar_to_python(tar_path, data_dir):
    """Decode a tarball of ``train/NNNNN_L.jpg`` / ``test/NNNNN_L.jpg`` into
    ``data_dir/cifar-10-batches-py`` (images in NNNNN order). Returns the counts."""
    from PIL import Image

    found = {"train": [], "test": []}
    with tarfile.open(tar_path) as tar:
        for member in tar:
            m = JPEG_NAME.search(member.name)
            if not member.isfile() or not m:
                continue
            with Image.open(io.BytesIO(tar.extractfile(member).read())) as im:
                pixels = np.asarray(im.convert("RGB"), np.uint8)
            if pixels.shape != (32, 32, 3):
                raise ValueError(f"--cifar: {member.name} is {pixels.shape}, not 32x32 RGB")
            found[m.group(1)].append((int(m.group(2)), int(m.group(3)), pixels))
    if not found["train"] or not found["test"]:
        raise ValueError(f"--cifar: {tar_path} holds no train/NNNNN_L.jpg and "
                         "test/NNNNN_L.jpg files")
    arrays = []
    for part in ("train", "test"):
        items = sorted(found[part], key=lambda t: t[0])
        arrays += [np.stack([t[2] for t in items]), np.array([t[1] for t in items], np.int64)]
    _write_python_layout(os.path.join(data_dir, "cifar-10-batches-py"), *arrays)
    return {"train": len(arrays[1]), "test": len(arrays[3])}


def prepare_cifar(spec, tmp):
    """A --data_dir for ``incv_train.py --dataset cifar10`` and how it was made."""
    if os.path.isdir(spec):
        if not os.path.isdir(os.path.join(spec, "cifar-10-batches-py")):
            raise ValueError(f"--cifar: {spec} holds no cifar-10-batches-py folder")
        return spec, "folder"
    if not os.path.isfile(spec):
        raise ValueError(f"--cifar: {spec} is neither a file nor a folder")
    with tarfile.open(spec) as tar:
        names = tar.getnames()
    if any(n.rstrip("/").endswith("cifar-10-batches-py/data_batch_1") for n in names):
        with tarfile.open(spec) as tar:
            tar.extractall(tmp, filter="data")
        roots = glob.glob(os.path.join(tmp, "**", "cifar-10-batches-py"), recursive=True)
        return os.path.dirname(roots[0]), "official tarball"
    counts = jpeg_tar_to_python(spec, tmp)
    return tmp, f"JPEG tarball decoded ({counts['train']} train, {counts['test']} test images)"


# ------------------------------------------------------------------------------- stages

class Budget:
    def __init__(self, seconds):
        self.start, self.seconds = time.perf_counter(), seconds

    def left(self):
        return self.seconds - (time.perf_counter() - self.start)


def speed(backend, precision, sizes, timeout):
    """tests/backend_bench.py's child for one backend and precision: images/s per path."""
    args = backend_bench.parse_args([
        "--backends", backend, "--precision", precision, "--paths", *SPEED_PATHS,
        "--images", str(sizes["images"]), "--rounds", str(sizes["rounds"]),
        "--arch", sizes["arch"], "--timeout", str(int(max(timeout, 1)))])
    t = time.perf_counter()
    out = backend_bench.run_child(args, backend)
    out["stage_s"] = round(time.perf_counter() - t, 1)
    return out


def plain_pytorch(sizes, timeout):
    args = backend_bench.parse_args([
        "--images", str(sizes["images"]), "--rounds", str(sizes["rounds"]), "--arch",
        "resnet32", "--device", "auto", "--timeout", str(int(max(timeout, 1)))])
    return backend_bench.torch_peer(args)


def read_log(results_dir):
    """Per-epoch test accuracy and seconds from the run's log.jsonl."""
    logs = glob.glob(os.path.join(results_dir, "**", "log.jsonl"), recursive=True)
    if not logs:  # stopped before its first epoch ended
        return []
    sys.path.insert(0, ROOT)
    from noisylabels import utils

    # standard training logs its one network as *_model1
    return [{"epoch": r.get("epoch"), "seconds": r.get("seconds"), "lr": r.get("lr"),
             "test_accuracy": r.get("test_accuracy_model1")} for r in utils.read_jsonl(logs[0])]


def real_training(backend, data_dir, epochs, arch, timeout, tmp):
    """``incv_train.py --method standard`` on CIFAR-10 (sym 0.5, Table 1's baseline)."""
    out = os.path.join(tmp, "train")
    cmd = [sys.executable, os.path.join(ROOT, "incv_train.py"), "--backend", backend,
           "--dataset", "cifar10", "--data_dir", data_dir, "--no_download", "--arch", arch,
           "--method", "standard", "--noise_pattern", "sym", "--noisy_ratio", "0.5",
           "--epochs", str(epochs), "--results_dir", out, "--verbose", "0"]
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        rc, tail = proc.returncode, (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    except subprocess.TimeoutExpired:
        rc, tail = "timeout", [f"stopped after {timeout:.0f} s"]
    wall = time.perf_counter() - t
    rows = read_log(out)
    return {"backend": backend, "arch": arch, "epochs_asked": epochs, "rc": rc,
            "wall_s": round(wall, 1), "epochs": rows, "command": " ".join(cmd[1:]),
            **({"error": " | ".join(tail)} if rc != 0 else {})}


# ------------------------------------------------------------------------------- report

def report(result):
    lines = [f"GPU: {result['gpu'] or 'none found (dry run)'}; sizes {result['sizes']}", "",
             "| path | " + " | ".join(f"{r['backend']} {r['precision']}"
                                      for r in result["speed"]) + " |",
             "|---|" + "---:|" * len(result["speed"])]
    for path in SPEED_PATHS:
        cells = []
        for r in result["speed"]:
            v = (r.get("paths") or {}).get(path)
            cells.append(f"{v['images_per_s']:.0f}" if v else "n/a")
        lines.append(f"| {backend_bench.LABELS[path]} | " + " | ".join(cells) + " |")
    peer = result.get("plain_pytorch") or {}
    if "images_per_s" in peer:
        p = peer["images_per_s"]
        lines.append(f"\nplain PyTorch ResNet-32 ({peer.get('device')}): one "
                     f"{p.get('torch_one', 0):.0f}, two-net {p.get('torch_two', 0):.0f}, "
                     f"pair {p.get('torch_pair', 0):.0f} images/s")
    for r in result["speed"]:
        if "error" in r:
            lines.append(f"{r['backend']} {r['precision']}: n/a ({r['error']})")
    tr = result.get("training")
    if tr:
        accs = ", ".join(f"{e.get('test_accuracy', float('nan')):.3f}" for e in tr["epochs"])
        lines.append(f"\nCIFAR-10 training ({tr['backend']}, {tr['arch']}, sym 0.5, standard): "
                     f"{len(tr['epochs'])} epochs in {tr['wall_s']} s, test accuracy per "
                     f"epoch: {accs or 'none'}" + (f"; error: {tr['error']}" if "error" in tr
                                                   else ""))
    for s in result["skipped"]:
        lines.append(f"skipped: {s}")
    return "\n".join(lines)


def main(args):
    budget = Budget(args.budget_s)
    gpu, how = find_gpu()
    dry = args.dry_run == "on" or (args.dry_run == "auto" and gpu is None)
    sizes = DRY_SIZES if dry else GPU_SIZES
    print(f"GPU: {gpu}" if gpu else f"no GPU found ({how}): dry run at tiny sizes", flush=True)
    backends = [b for b in args.backends if installed(b)]
    result = {"gpu": gpu, "dry_run": dry, "sizes": sizes, "versions": versions(),
              "budget_s": args.budget_s, "speed": [], "skipped": [
                  f"{b}: not installed" for b in args.backends if b not in backends]}
    sys.path.insert(0, ROOT)
    from noisylabels import utils

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = None
        if args.cifar:
            data_dir, made = prepare_cifar(args.cifar, tmp)
            result["cifar"] = {"source": args.cifar, "how": made}
            print(f"CIFAR-10: {made}", flush=True)
        # fp32 first (the training's backend is chosen from it), plain PyTorch, the
        # training, then the other precisions with what is left.
        first = [(b, p) for p in args.precisions[:1] for b in backends]
        rest = [(b, p) for p in args.precisions[1:] for b in backends]
        train_s = args.train_s if data_dir else 0.0
        per = (args.budget_s - train_s - PEER_S) / max(1, len(first) + len(rest))
        measure(first, result, sizes, budget, train_s + PEER_S + per * len(rest))
        result["plain_pytorch"] = (
            plain_pytorch(sizes, max(PEER_S, budget.left() - train_s - per * len(rest)))
            if installed("torch") else {"error": "torch not installed"})
        if data_dir:
            result["training"] = train_stage(args, result, data_dir, sizes, budget, tmp)
        measure(rest, result, sizes, budget, 0.0)
    result["wall_s"] = round(args.budget_s - budget.left(), 1)
    text = report(result)
    result["table"] = text
    utils.write_json(args.out, result)
    print(text)
    print(f"\nwritten: {args.out} ({result['wall_s']} s)")
    return 0


def measure(settings, result, sizes, budget, reserve):
    """Each (backend, precision) in its own process, sharing what the budget leaves."""
    for i, (b, p) in enumerate(settings):
        share = (budget.left() - reserve) / (len(settings) - i)
        if share < 20:
            result["skipped"].append(f"{b} {p}: {share:.0f} s of the budget left")
            continue
        print(f"measuring {b} {p} ({share:.0f} s at most) ...", flush=True)
        result["speed"].append(speed(b, p, sizes, share))


def train_stage(args, result, data_dir, sizes, budget, tmp):
    """Choose the backend and the epoch count from the fp32 one-network rates."""
    rates = {r["backend"]: r["paths"]["one"]["images_per_s"] for r in result["speed"]
             if "paths" in r and "one" in r["paths"]}
    if not rates:
        result["skipped"].append("CIFAR-10 training: no backend measured")
        return None
    backend = (args.train_backend if args.train_backend != "auto"
               else max(rates, key=rates.get))
    seconds = min(args.train_s, budget.left() - 10)
    n_train = 0
    for i in range(1, 6):  # the five training batches (not always of equal size)
        with open(os.path.join(data_dir, "cifar-10-batches-py", f"data_batch_{i}"), "rb") as f:
            n_train += len(pickle.load(f, encoding="bytes")[b"labels"])
    # Half the time for the epochs' training at the measured rate: the rest is start-up,
    # compilation, the per-epoch test evaluation and the final predictions.
    fit = 0.5 * seconds * rates.get(backend, 0) / max(n_train, 1)
    epochs = int(max(1, min(sizes["max_epochs"], fit)))
    print(f"training CIFAR-10 on {backend}: {epochs} epochs ({seconds:.0f} s at most) ...",
          flush=True)
    return real_training(backend, data_dir, epochs, sizes["arch"], seconds, tmp)


if __name__ == "__main__":
    sys.exit(main(parse_args()))
