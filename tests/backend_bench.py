"""Every training path on every installed Keras backend, side by side, each backend in its
own process (Keras picks its backend once per process), with plain PyTorch as the peer.

    .venv/bin/python tests/backend_bench.py                       # tensorflow, jax, torch
    .venv/bin/python tests/backend_bench.py --backends jax torch --images 5120 --rounds 3
    .venv/bin/python tests/benchmark.py --backends tensorflow jax torch   # the same

Paths (random CIFAR-shaped data, uint8 pixels / 255, labels 0..9; --arch, --batch_size):

  one         one network: pipelines.make_train_dataset (authors' shift + flip) +
              training.compile_classifier + fit, whole epochs, pipeline included
  pair        INCV's pair: paired.PairedNetworks + make_paired_dataset (each network on
              its own half; images counted for both networks)
  coteaching  the fused Co-teaching step: CoTeaching + make_coteaching_dataset (all S,
              forget rate 0.2)
  predict     model.predict(x, batch_size=1024)
  pipeline    the training input pipeline alone (no model): its images/s
  one_numpy   (TensorFlow only) ``one`` with the numpy pipeline instead of tf.data: which
              pipeline TensorFlow should use (the default on JAX / PyTorch is numpy)

Each path runs once untimed (tracing, compilation), then --rounds times; the best round is
shown. A child prints one JSON object; the parent prints a Markdown table (images/s) and
the ratios to the TensorFlow column and to plain PyTorch (tests/benchmark_torch.py), and
writes the JSON to --out (atomically).

Not a pytest test (tests/test_backends.py runs it tiny).
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.dirname(os.path.abspath(__file__))
BACKENDS = ("tensorflow", "jax", "torch")
PATHS = ("one", "pair", "coteaching", "predict", "pipeline", "one_numpy")
LABELS = {"one": "one network (fit)", "pair": "INCV pair (PairedNetworks)",
          "coteaching": "Co-teaching (fused step)", "predict": "predict",
          "pipeline": "input pipeline alone", "one_numpy": "one network, numpy pipeline"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS,
                   help="backends to measure (those not installed are reported as n/a)")
    p.add_argument("--images", type=int, default=2560, help="images per timed epoch")
    p.add_argument("--predict_images", type=int, default=10240)
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--arch", type=str, default="resnet32",
                   choices=("cnn", "resnet20", "resnet32", "resnet44", "resnet56"))
    p.add_argument("--rounds", type=int, default=2, help="timed rounds after the warm-up")
    p.add_argument("--precision", type=str, default="float32",
                   choices=("float32", "mixed_bfloat16", "mixed_float16"),
                   help="Keras dtype policy of the networks")
    p.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS)
    p.add_argument("--torch_peer", type=str, default="on", choices=("on", "off"),
                   help="also time plain PyTorch (tests/benchmark_torch.py)")
    p.add_argument("--device", type=str, default="cpu", choices=("cpu", "auto"),
                   help="plain PyTorch's device (auto: CUDA when available)")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per child")
    p.add_argument("--out", type=str, default=os.path.join(ROOT, "results",
                                                           "backend_bench.json"))
    p.add_argument("--child", type=str, default=None, choices=BACKENDS,
                   help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ------------------------------------------------------------------------------ the child

def _device_of(backend):
    """What the backend computes on: "gpu" or "cpu" (and the device's name)."""
    if backend == "jax":
        import jax

        d = jax.devices()[0]
        return ("gpu" if d.platform in ("gpu", "cuda", "rocm") else d.platform), str(d)
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            return "gpu", torch.cuda.get_device_name(0)
        return "cpu", "cpu"
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return ("gpu", gpus[0].name) if gpus else ("cpu", "cpu")


def _timed(run, rounds):
    run()  # untimed: tracing, compilation, first allocations
    out = []
    for _ in range(rounds):
        t, c = time.perf_counter(), time.process_time()
        images = run()
        out.append({"images": images, "wall_s": time.perf_counter() - t,
                    "cpu_s": time.process_time() - c})
    best = min(out, key=lambda r: r["wall_s"] / max(r["images"], 1))
    return {"rounds": out, "images_per_s": best["images"] / best["wall_s"]}


def child(args, progress=None):
    """Measure ``args.paths`` on the backend this process loaded; returns a dict, and gives
    ``progress`` the same dict so far after each path."""
    sys.path.insert(0, ROOT)
    from noisylabels import utils

    keras = utils.load_backend(args.child)
    keras.mixed_precision.set_global_policy(args.precision)
    from noisylabels import models, paired, pipelines, training
    from noisylabels.coteaching import CoTeaching

    kind, name = _device_of(args.child)
    rng = np.random.default_rng(0)
    n, b = args.images, args.batch_size
    x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8).astype(np.float32) / 255
    y = rng.integers(0, 10, n).astype(np.int64)
    utils.set_random_seed(0)

    def build():
        return models.build_model(args.arch, (32, 32, 3), 10)

    def fit_epochs(model, make_ds):
        def run():
            ds = make_ds()
            model.fit(ds, epochs=1, verbose=0, shuffle=False,
                      callbacks=pipelines.epoch_callbacks(ds))
            return n
        return run

    results = {}
    paths = [p for p in args.paths if p != "one_numpy" or args.child == "tensorflow"]
    for path in paths:
        if path in ("one", "one_numpy"):
            pipe = "numpy" if path == "one_numpy" else "auto"
            run = fit_epochs(training.compile_classifier(build()), lambda pipe=pipe: (
                pipelines.make_train_dataset(x, y, batch_size=b, augment="standard", seed=0,
                                             pipeline=pipe)))
        elif path == "pair":
            pair = paired.PairedNetworks(build(), build())
            pair.compile(training.adam(1e-3), training.adam(1e-3))
            half = n // 2
            run = fit_epochs(pair, lambda: pipelines.make_paired_dataset(
                x[:half], y[:half], x[half:2 * half], y[half:2 * half], batch_size=b,
                augment="standard", seed=0))
        elif path == "coteaching":
            cot = CoTeaching(build(), build())
            cot.compile(training.adam(1e-3), training.adam(1e-3))
            cot.forget_rate.assign(0.2)
            run = fit_epochs(cot, lambda: pipelines.make_coteaching_dataset(
                x, y, np.ones(n, bool), np.arange(n), np.arange(0), batch_size=b,
                c_batch_size=0, augment="standard", seed=0))
        elif path == "predict":
            net = build()
            xp = np.resize(x, (args.predict_images, 32, 32, 3))

            def run(net=net, xp=xp):
                net.predict(xp, batch_size=1024, verbose=0)
                return len(xp)
        else:  # the pipeline alone
            def run():
                ds = pipelines.make_train_dataset(x, y, batch_size=b, augment="standard",
                                                  seed=0)
                if pipelines.resolve_pipeline() == "numpy":
                    for i in range(len(ds)):
                        ds[i]
                else:
                    for _ in ds:
                        pass
                return n
        results[path] = _timed(run, args.rounds)
        if progress:  # what is measured so far: a child stopped at its timeout keeps it
            progress(_report(args, keras, kind, name, results, pipelines, utils))
    return _report(args, keras, kind, name, results, pipelines, utils)


def _report(args, keras, kind, name, results, pipelines, utils):
    return {"backend": args.child, "device": kind, "device_name": name,
            "precision": args.precision, "pipeline": pipelines.resolve_pipeline(),
            "versions": {"keras": keras.__version__, **utils.backend_versions()},
            "tensorflow_imported": "tensorflow" in sys.modules, "paths": dict(results)}


# ----------------------------------------------------------------------------- the parent

def child_command(args, backend):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", backend,
           "--images", str(args.images), "--predict_images", str(args.predict_images),
           "--batch_size", str(args.batch_size), "--arch", args.arch,
           "--rounds", str(args.rounds), "--precision", args.precision,
           "--paths", *args.paths]
    return cmd


def run_child(args, backend, command=None):
    """One backend's measurements (a dict), or ``{"error": ...}``. ``command`` replaces the
    child's command line (tests/gpu_check.py's ``--fault`` test hook)."""
    import importlib.util

    if importlib.util.find_spec(backend) is None:
        return {"backend": backend, "error": f"{backend} is not installed"}
    # ROOT first, the caller's PYTHONPATH kept (a GPU machine's wheels in a --target folder)
    path = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": path,
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    try:
        proc = subprocess.run(command or child_command(args, backend), env=env,
                              capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired as err:  # the paths measured before it are kept
        out = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        partial = json.loads(lines[-1]) if lines else {"backend": backend}
        return {**partial, "error": f"timed out after {args.timeout} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"backend": backend, "error": f"exit {proc.returncode}: {tail[0][:300]}"}
    return json.loads(lines[-1])


def torch_peer(args, command=None):
    """Plain PyTorch ResNet (tests/benchmark_torch.py, own process): images/s per path.
    ``command`` replaces the child's command line (tests/gpu_check.py's test hook)."""
    cmd = command or [
        sys.executable, os.path.join(HERE, "benchmark_torch.py"), "--images",
        str(args.images), "--batch_size", str(args.batch_size), "--arch",
        args.arch if args.arch.startswith("resnet") else "resnet32", "--rounds",
        str(args.rounds), "--device", args.device]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"plain PyTorch peer timed out after {args.timeout} s"}
    try:
        info = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1])
    except (IndexError, ValueError):  # died before its JSON line: say how, in one line
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"error": f"plain PyTorch peer failed: exit {proc.returncode}: "
                         f"{tail[0][:300]}"}
    if not info.get("ready"):
        return {"error": info.get("error", "not ready")}
    rates = {k: max(r["images"] / r["wall_s"] for r in rounds)
             for k, rounds in info["rounds"].items()}
    return {"torch": info["torch"], "device": info.get("device"), "images_per_s": rates}


def table(results, peer):
    """Markdown: one row per path, one column per backend, images/s; ratios after."""
    backends = [r["backend"] for r in results]
    lines = ["| path | " + " | ".join(backends) + " |",
             "|---|" + "---:|" * len(backends)]
    for path in PATHS:
        cells = []
        for r in results:
            v = (r.get("paths") or {}).get(path)
            cells.append("n/a" if v is None else f"{v['images_per_s']:.0f}")
        if any(c != "n/a" for c in cells):
            lines.append(f"| {LABELS[path]} | " + " | ".join(cells) + " |")
    if peer and "images_per_s" in peer:
        p = peer["images_per_s"]
        lines.append(f"| plain PyTorch one / two-net / pair ({peer.get('device')}) | "
                     + " | ".join(f"{p.get('torch_one', 0):.0f} / {p.get('torch_two', 0):.0f}"
                                  f" / {p.get('torch_pair', 0):.0f}" for _ in backends) + " |")
    ratios = []
    ref = {r["backend"]: r for r in results if "paths" in r}
    peer_rate = {"one": "torch_one", "coteaching": "torch_two", "pair": "torch_pair"}
    for backend, r in ref.items():
        for path, v in r["paths"].items():
            parts = []
            if "tensorflow" in ref and backend != "tensorflow" and \
                    path in ref["tensorflow"]["paths"]:
                parts.append(f"{v['images_per_s'] / ref['tensorflow']['paths'][path]['images_per_s']:.2f}x TF")
            if peer and path in peer_rate and "images_per_s" in peer:
                parts.append(f"{v['images_per_s'] / peer['images_per_s'][peer_rate[path]]:.2f}x "
                             "plain PyTorch")
            if parts:
                ratios.append(f"{backend} {path}: " + ", ".join(parts))
    return "\n".join(lines), ratios


def main(args):
    sys.path.insert(0, ROOT)
    results = [run_child(args, b) for b in args.backends]
    peer = torch_peer(args) if args.torch_peer == "on" else None
    text, ratios = table(results, peer)
    print(f"{args.arch}, batch {args.batch_size}, {args.images} images per epoch, "
          f"{args.precision}, best of {args.rounds} rounds; images/s")
    print(text)
    for r in results:
        if "error" in r:
            print(f"{r['backend']}: n/a ({r['error']})")
    for line in ratios:
        print("  " + line)
    from noisylabels import utils

    utils.write_json(args.out, {"args": {k: v for k, v in vars(args).items() if k != "child"},
                                "backends": results, "plain_pytorch": peer,
                                "loadavg": os.getloadavg()})
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    ARGS = parse_args()
    if ARGS.child:
        child(ARGS, progress=lambda r: print(json.dumps(r), flush=True))
    else:
        sys.exit(main(ARGS))
