"""The GPU check: on a machine with an NVIDIA GPU, in about 6 minutes, how fast every training
path runs on each installed Keras backend (fp32 and mixed precision), plain PyTorch's
ResNet-32 on the same GPU, the input pipeline's own rate, and one real CIFAR-10 training of
ResNet-32 (``incv_train.py --method standard``) for as many epochs as ~3 minutes allow, with
its test accuracy per epoch. A JSON file and a printed table.

On a GPU machine without network and without TensorFlow (JAX and/or PyTorch with CUDA, numpy,
scikit-learn, matplotlib, pillow, absl-py, h5py, rich, ml-dtypes, packaging and
typing-extensions present), from a clone of this repository:

    # 1. where pip reaches a package index: the wheels it lacks
    make gpu-wheels            # keras, namex, optree for CPython 3.12 into .whl/
    # 2. copy the clone (with .whl/) and the CIFAR-10 images to the GPU machine, then there:
    python3 -m pip install --no-index --no-deps --target /tmp/site .whl/*.whl
    PYTHONPATH=/tmp/site python3 tests/gpu_check.py --cifar cifar-10-python.tar.gz \
        --out results/gpu_check

``--cifar`` takes the official ``cifar-10-python.tar.gz``, a folder holding
``cifar-10-batches-py``, or a tarball of JPEG files ``train/NNNNN_L.jpg`` /
``test/NNNNN_L.jpg`` (NNNNN = position, L = label; training images in the official order),
converted to the python layout in a temporary folder. Without ``--cifar`` the real training
is skipped.

Every stage (the CIFAR preparation, each backend and precision's speeds, plain PyTorch, the
training) runs on its own: one that fails or times out (a CUDA error, an out-of-memory, a
missing package) is recorded with its error, shown as ``n/a (its error's last line)`` in
the table and listed in the stage table, and the check goes on to the next. ``--out DIR``
receives gpu_check.json and gpu_check.md (the table), both rewritten atomically before and
after every stage: a check stopped at any point leaves what it measured, and the JSON's
``in_progress`` names the stage it was stopped in. The exit status is 0 when at least one
stage measured something, 1 when none did.

Without a GPU it says so and runs as a dry run (tiny sizes, the small ``cnn``, a few
minutes on 2 CPU cores; tests/test_gpu_check.py runs it so, and ``make gpu-check-sim``
repeats the whole procedure above in a fresh venv holding only what the GPU machine holds):

    .venv/bin/python tests/gpu_check.py --backends jax --cifar fake.tar.gz

Every stage has its share of ``--budget_s`` (default 340 s, 150 of them for the
training); a stage that would not fit is skipped and listed as skipped, never cut off
silently. The speed children are tests/backend_bench.py's (each backend and precision in
its own process). ``--fault`` is a test hook (tests/test_gpu_check.py): it makes one
stage's child fail on an import or hang.
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
# What Keras 3.15 and its wheels import (keras's and optree's requirements), and the project
# beside them: checked up front, since one missing module fails every child on its import.
NEEDED = ("keras", "namex", "optree", "typing_extensions", "absl", "rich", "h5py",
          "ml_dtypes", "packaging", "numpy", "sklearn", "PIL", "matplotlib")
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
    p.add_argument("--out", type=str, default=os.path.join(ROOT, "results", "gpu_check"),
                   help="folder for gpu_check.json and gpu_check.md (the table), both "
                        "rewritten after every stage (default: results/gpu_check)")
    p.add_argument("--fault", nargs="+", default=[], metavar="STAGE=KIND",
                   help="test hook: STAGE's child (a name of the stage table: 'speed jax "
                        "float32', 'plain PyTorch', 'training') fails on an import (KIND "
                        "import) or hangs until a timeout of SECONDS (KIND hang:SECONDS)")
    args = p.parse_args(argv)
    try:
        parse_faults(args.fault)
    except ValueError as err:
        p.error(str(err))
    return args


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


def write_jpeg_tarball(path, n_train, n_test, seed=0):
    """A tarball of the offline copy's layout: flat-coloured 32x32 JPEGs whose red channel
    encodes the position modulo 64 (JPEG keeps a flat colour almost exactly), stored out of
    order; tests/test_gpu_check.py's and ``make gpu-check-sim``'s stand-in for CIFAR-10.
    Returns the labels, {"train": (n_train,) ints, "test": (n_test,) ints}."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    labels = {"train": rng.integers(0, 10, n_train), "test": rng.integers(0, 10, n_test)}
    with tarfile.open(path, "w:gz") as tar:
        for part, n in (("test", n_test), ("train", n_train)):
            for i in rng.permutation(n):
                im = Image.new("RGB", (32, 32), (int(4 * (i % 64)), 100, 200))
                buf = io.BytesIO()
                im.save(buf, format="JPEG", quality=95)
                info = tarfile.TarInfo(f"{part}/{i:05d}_{labels[part][i]}.jpg")
                info.size = buf.tell()
                buf.seek(0)
                tar.addfile(info, buf)
    return labels


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


FAULT_STAGES = tuple(f"speed {b} {p}" for b in BACKENDS for p in (
    "float32", "mixed_bfloat16", "mixed_float16")) + ("plain PyTorch", "training")


def parse_faults(specs):
    """``--fault`` values ``STAGE=import`` / ``STAGE=hang:SECONDS`` as {stage: (kind, s)}."""
    faults = {}
    for spec in specs:
        stage, _, kind = spec.rpartition("=")
        kind, _, seconds = kind.partition(":")
        if kind not in ("import", "hang") or (kind == "hang") != bool(seconds):
            raise ValueError(f"--fault: {spec!r} is not STAGE=import or STAGE=hang:SECONDS")
        if stage not in FAULT_STAGES:  # a misspelt stage would fault nothing, silently
            raise ValueError(f"--fault: no stage {stage!r} (one of {', '.join(FAULT_STAGES)})")
        faults[stage] = (kind, float(seconds or 0))
    return faults


def fault_command(fault):
    """The command a faulted stage's child runs instead of its own: an import that fails
    (as when a wheel's dependency is missing) or a sleep until the stage's timeout."""
    if fault[0] == "import":
        return [sys.executable, "-c", "import gpu_check_fault_missing_module"]
    return [sys.executable, "-c", "import time; time.sleep(3600)"]


def speed(backend, precision, sizes, timeout, fault=None):
    """tests/backend_bench.py's child for one backend and precision: images/s per path."""
    if fault and fault[0] == "hang":
        timeout = fault[1]
    args = backend_bench.parse_args([
        "--backends", backend, "--precision", precision, "--paths", *SPEED_PATHS,
        "--images", str(sizes["images"]), "--rounds", str(sizes["rounds"]),
        "--arch", sizes["arch"], "--timeout", str(int(max(timeout, 1)))])
    t = time.perf_counter()
    # A failed child's dict holds its backend and error only: the column needs both names.
    out = {"backend": backend, "precision": precision, **backend_bench.run_child(
        args, backend, command=fault_command(fault) if fault else None)}
    out["stage_s"] = round(time.perf_counter() - t, 1)
    return out


def plain_pytorch(sizes, timeout, fault=None):
    if fault and fault[0] == "hang":
        timeout = fault[1]
    args = backend_bench.parse_args([
        "--images", str(sizes["images"]), "--rounds", str(sizes["rounds"]), "--arch",
        "resnet32", "--device", "auto", "--timeout", str(int(max(timeout, 1)))])
    return backend_bench.torch_peer(args, command=fault_command(fault) if fault else None)


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


def real_training(backend, data_dir, epochs, arch, timeout, tmp, fault=None):
    """``incv_train.py --method standard`` on CIFAR-10 (sym 0.5, Table 1's baseline)."""
    out = os.path.join(tmp, "train")
    cmd = [sys.executable, os.path.join(ROOT, "incv_train.py"), "--backend", backend,
           "--dataset", "cifar10", "--data_dir", data_dir, "--no_download", "--arch", arch,
           "--method", "standard", "--noise_pattern", "sym", "--noisy_ratio", "0.5",
           "--epochs", str(epochs), "--results_dir", out, "--verbose", "0"]
    if fault:
        timeout = fault[1] if fault[0] == "hang" else timeout
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    t = time.perf_counter()
    try:
        proc = subprocess.run(fault_command(fault) if fault else cmd, capture_output=True,
                              text=True, timeout=timeout, env=env)
        rc, tail = proc.returncode, (proc.stderr or proc.stdout).strip().splitlines()[-1:]
    except subprocess.TimeoutExpired:
        rc, tail = "timeout", [f"timed out after {timeout:.0f} s"]
    wall = time.perf_counter() - t
    rows = read_log(out)
    return {"backend": backend, "arch": arch, "epochs_asked": epochs, "rc": rc,
            "wall_s": round(wall, 1), "epochs": rows, "command": " ".join(cmd[1:]),
            **({"error": f"exit {rc}: {' '.join(tail)[:300]}" if rc != "timeout"
                else tail[0]} if rc != 0 else {})}


def measured(stage, value):
    """Whether a stage's result holds at least one number."""
    if not isinstance(value, dict):
        return False
    if stage.startswith("speed "):
        return any("images_per_s" in v for v in (value.get("paths") or {}).values())
    if stage == "plain PyTorch":
        return bool(value.get("images_per_s"))
    if stage == "training":
        return bool(value.get("epochs"))
    return "error" not in value  # the CIFAR preparation: done or not


def last_line(error):
    """An error's last non-empty line, for a table cell (Markdown's | escaped)."""
    lines = [ln.strip() for ln in str(error).strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else "unknown error")[:160].replace("|", "\\|")


# ------------------------------------------------------------------------------- report

def report(result):
    """The printed table: images/s per path and backend (``n/a (error)`` where a stage
    failed), plain PyTorch, the training's accuracies, and every stage's status."""
    speeds = result.get("speed") or []
    lines = [f"GPU: {result.get('gpu') or 'none found (dry run)'}; sizes {result.get('sizes')}"]
    if speeds:
        lines += ["", "| path | " + " | ".join(f"{r.get('backend', '?')} "
                                               f"{r.get('precision', '?')}" for r in speeds)
                  + " |", "|---|" + "---:|" * len(speeds)]
        for path in SPEED_PATHS:
            cells = []
            for r in speeds:
                v = (r.get("paths") or {}).get(path)
                cells.append(f"{v['images_per_s']:.0f}" if v and "images_per_s" in v
                             else f"n/a ({last_line(r['error'])})" if "error" in r else "n/a")
            lines.append(f"| {backend_bench.LABELS[path]} | " + " | ".join(cells) + " |")
    peer = result.get("plain_pytorch") or {}
    if peer.get("images_per_s"):
        p = peer["images_per_s"]
        lines.append(f"\nplain PyTorch ResNet-32 ({peer.get('device')}): one "
                     f"{p.get('torch_one', 0):.0f}, two-net {p.get('torch_two', 0):.0f}, "
                     f"pair {p.get('torch_pair', 0):.0f} images/s")
    elif "error" in peer:
        lines.append(f"\nplain PyTorch ResNet-32: n/a ({last_line(peer['error'])})")
    tr = result.get("training")
    if tr:
        accs = ", ".join("n/a" if e.get("test_accuracy") is None
                         else f"{e['test_accuracy']:.3f}" for e in tr.get("epochs", []))
        lines.append(f"\nCIFAR-10 training ({tr.get('backend')}, {tr.get('arch')}, sym 0.5, "
                     f"standard): {len(tr.get('epochs', []))} epochs in {tr.get('wall_s')} s, "
                     f"test accuracy per epoch: {accs or 'none'}"
                     + (f"; error: {last_line(tr['error'])}" if "error" in tr else ""))
    stages = result.get("stages") or []
    if stages:
        lines += ["", "| stage | status | seconds | why |", "|---|---|---:|---|"]
        for st in stages:
            lines.append(f"| {st['stage']} | {st['status']} | {st.get('seconds', '')} | "
                         f"{last_line(st['error']) if st.get('error') else ''} |")
    failed = [st["stage"] for st in stages if st["status"] in ("failed", "partial")]
    if failed:
        some = any(st["status"] in ("ok", "partial") for st in stages
                   if st["stage"] != "CIFAR-10 preparation")
        lines.append(f"\nfailed: {', '.join(failed)} "
                     + ("(the others' numbers are above)" if some else "(nothing measured)"))
    if result.get("missing_modules"):
        lines.append(f"missing modules: {', '.join(result['missing_modules'])}")
    if result.get("in_progress"):
        lines.append(f"stopped during: {result['in_progress']}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------- main

class Check:
    """The result so far and where it goes: gpu_check.json and gpu_check.md (the table) in
    ``out``, both rewritten atomically before and after every stage, so that a check
    stopped at any point (a time limit, a crash) leaves every stage measured before it."""

    def __init__(self, out, result, budget, utils):
        self.out, self.result, self.budget, self.utils = out, result, budget, utils
        self.json = os.path.join(out, "gpu_check.json")

    def save(self):
        self.result["wall_s"] = round(self.result["budget_s"] - self.budget.left(), 1)
        self.result["table"] = report(self.result)
        self.utils.write_json(self.json, self.result)
        with self.utils.atomic_write(os.path.join(self.out, "gpu_check.md")) as f:
            f.write(self.result["table"] + "\n")

    def stage(self, name, run, keep):
        """Run one stage and ``keep(value)`` its value, or ``{"error": ...}`` when it raised,
        in the result before it is saved. Any failure is recorded and the check goes on:
        one CUDA error must not cost the other stages. Returns the value."""
        self.result["in_progress"] = name
        self.save()
        t = time.perf_counter()
        try:
            value = run()
        except Exception as err:  # noqa: BLE001  (whatever it was, the next stage runs)
            value = {"error": f"{type(err).__name__}: {' '.join(str(err).split())}"}
        if not isinstance(value, dict):
            value = {"error": f"no result ({value!r})"}
        got = measured(name, value)
        status = ("ok" if got and "error" not in value else "partial" if got else "failed")
        self.result["stages"].append({
            "stage": name, "status": status, "seconds": round(time.perf_counter() - t, 1),
            **({"error": value["error"]} if "error" in value else {})})
        keep(value)
        self.result["in_progress"] = None
        self.save()
        if status != "ok":
            print(f"  {name}: {status} ({last_line(value['error'])})", flush=True)
        return value

    def skip(self, name, why):
        self.result["skipped"].append(f"{name}: {why}")
        self.result["stages"].append({"stage": name, "status": "skipped", "error": why})
        self.save()


def main(args):
    budget = Budget(args.budget_s)
    faults = parse_faults(args.fault)
    gpu, how = find_gpu()
    dry = args.dry_run == "on" or (args.dry_run == "auto" and gpu is None)
    sizes = DRY_SIZES if dry else GPU_SIZES
    print(f"GPU: {gpu}" if gpu else f"no GPU found ({how}): dry run at tiny sizes", flush=True)
    backends = [b for b in args.backends if installed(b)]
    # What Keras and its wheels import, checked up front: a missing one fails every child.
    missing = [m for m in NEEDED if not installed(m)]
    if missing:
        print(f"missing modules: {', '.join(missing)} (the Keras stages will fail on import; "
              "see docs/backends.md 'A GPU')", flush=True)
    result = {"gpu": gpu, "dry_run": dry, "sizes": sizes, "versions": versions(),
              "missing_modules": missing, "budget_s": args.budget_s, "faults": args.fault,
              "stages": [], "speed": [], "skipped": [], "in_progress": None}
    sys.path.insert(0, ROOT)
    from noisylabels import utils

    check = Check(args.out, result, budget, utils)
    for b in args.backends:
        if b not in backends:
            check.skip(f"speed {b}", "not installed")
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = None
        if args.cifar:
            prep = check.stage("CIFAR-10 preparation", lambda: dict(zip(
                ("data_dir", "how"), prepare_cifar(args.cifar, tmp))),
                lambda v: result.update(cifar={"source": args.cifar, **v}))
            data_dir = prep.get("data_dir")
            if data_dir:
                print(f"CIFAR-10: {prep['how']}", flush=True)
        # fp32 first (the training's backend is chosen from it), plain PyTorch, the
        # training, then the other precisions with what is left.
        first = [(b, p) for p in args.precisions[:1] for b in backends]
        rest = [(b, p) for p in args.precisions[1:] for b in backends]
        train_s = args.train_s if data_dir else 0.0
        per = (args.budget_s - train_s - PEER_S) / max(1, len(first) + len(rest))
        measure(first, check, sizes, budget, train_s + PEER_S + per * len(rest), faults)
        if installed("torch"):
            peer_s = max(PEER_S, budget.left() - train_s - per * len(rest))
            check.stage("plain PyTorch", lambda: plain_pytorch(
                sizes, peer_s, faults.get("plain PyTorch")),
                lambda v: result.update(plain_pytorch=v))
        else:
            result["plain_pytorch"] = {"error": "torch not installed"}
            check.skip("plain PyTorch", "torch not installed")
        if data_dir:
            train_stage(args, check, data_dir, sizes, budget, tmp, faults.get("training"))
        elif args.cifar:
            check.skip("training", "the CIFAR-10 preparation failed")
        measure(rest, check, sizes, budget, 0.0, faults)
    check.save()
    print(result["table"])
    ok = any(st["status"] in ("ok", "partial") and st["stage"] != "CIFAR-10 preparation"
             for st in result["stages"])
    print(f"\nwritten: {check.json} and gpu_check.md ({result['wall_s']} s)"
          + ("" if ok else "; no stage measured anything"))
    return 0 if ok else 1


def measure(settings, check, sizes, budget, reserve, faults):
    """Each (backend, precision) in its own process, sharing what the budget leaves."""
    for i, (b, p) in enumerate(settings):
        share = (budget.left() - reserve) / (len(settings) - i)
        name = f"speed {b} {p}"
        if share < 20:
            check.skip(name, f"{share:.0f} s of the budget left")
            continue
        print(f"measuring {b} {p} ({share:.0f} s at most) ...", flush=True)
        fault = faults.get(name)
        # the table's column needs both names, also when the stage raised before its child
        check.stage(name, lambda: speed(b, p, sizes, share, fault), lambda v: check.result[
            "speed"].append({"backend": b, "precision": p, **v}))


def train_stage(args, check, data_dir, sizes, budget, tmp, fault=None):
    """Choose the backend and the epoch count from the fp32 one-network rates, and train."""
    rates = {r["backend"]: r["paths"]["one"]["images_per_s"] for r in check.result["speed"]
             if "images_per_s" in (r.get("paths") or {}).get("one", {})}
    if not rates:
        check.skip("training", "no backend measured")
        return
    backend = (args.train_backend if args.train_backend != "auto"
               else max(rates, key=rates.get))
    seconds = min(args.train_s, budget.left() - 10)

    def run():
        n_train = 0
        for i in range(1, 6):  # the five training batches (not always of equal size)
            with open(os.path.join(data_dir, "cifar-10-batches-py", f"data_batch_{i}"),
                      "rb") as f:
                n_train += len(pickle.load(f, encoding="bytes")[b"labels"])
        # Half the time for the epochs' training at the measured rate: the rest is start-up,
        # compilation, the per-epoch test evaluation and the final predictions.
        fit = 0.5 * seconds * rates.get(backend, 0) / max(n_train, 1)
        epochs = int(max(1, min(sizes["max_epochs"], fit)))
        print(f"training CIFAR-10 on {backend}: {epochs} epochs ({seconds:.0f} s at most) ...",
              flush=True)
        return real_training(backend, data_dir, epochs, sizes["arch"], seconds, tmp, fault)

    check.stage("training", run, lambda v: check.result.update(training=v))


if __name__ == "__main__":
    sys.exit(main(parse_args()))
