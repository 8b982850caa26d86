"""tests/gpu_check.py: its CIFAR conversion, and its dry run end to end on a machine without
a GPU (the check's plumbing: every stage runs and lands in the JSON; speeds are not judged)."""

import io
import json
import os
import pickle
import subprocess
import sys
import tarfile

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gpu_check  # noqa: E402


def jpeg_tarball(path, n_train, n_test, seed=0):
    """A tarball of the offline copy's layout: flat-coloured 32x32 JPEGs whose red channel
    encodes the position (JPEG keeps a flat colour almost exactly), stored out of order."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    labels = {"train": rng.integers(0, 10, n_train), "test": rng.integers(0, 10, n_test)}
    with tarfile.open(path, "w:gz") as tar:
        for part, n in (("test", n_test), ("train", n_train)):
            for i in rng.permutation(n):
                im = Image.new("RGB", (32, 32), (int(4 * i), 100, 200))
                buf = io.BytesIO()
                im.save(buf, format="JPEG", quality=95)
                info = tarfile.TarInfo(f"{part}/{i:05d}_{labels[part][i]}.jpg")
                info.size = buf.tell()
                buf.seek(0)
                tar.addfile(info, buf)
    return labels


def test_jpeg_tarball_becomes_the_python_layout_in_order(tmp_path):
    labels = jpeg_tarball(tmp_path / "c.tar.gz", 12, 5)
    data_dir, how = gpu_check.prepare_cifar(str(tmp_path / "c.tar.gz"), str(tmp_path / "d"))
    assert "12 train, 5 test" in how
    folder = os.path.join(data_dir, "cifar-10-batches-py")
    batches = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(os.path.join(folder, name), "rb") as f:
            batches.append(pickle.load(f, encoding="bytes"))
    train = np.concatenate([b[b"data"] for b in batches[:5]])
    assert train.shape == (12, 3072) and train.dtype == np.uint8
    assert [y for b in batches[:5] for y in b[b"labels"]] == labels["train"].tolist()
    assert batches[5][b"labels"] == labels["test"].tolist()
    # rows are R, G, B planes; the red plane's value is 4 * position
    np.testing.assert_allclose(train[:, :1024].mean(1), 4 * np.arange(12), atol=2)
    np.testing.assert_allclose(train[:, 1024:2048].mean(1), 100, atol=2)


def test_cifar_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="--cifar: .* neither a file nor a folder"):
        gpu_check.prepare_cifar(str(tmp_path / "missing"), str(tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no cifar-10-batches-py"):
        gpu_check.prepare_cifar(str(tmp_path / "empty"), str(tmp_path))
    with tarfile.open(tmp_path / "other.tar", "w") as tar:
        info = tarfile.TarInfo("readme.txt")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(ValueError, match="no train/NNNNN_L.jpg"):
        gpu_check.prepare_cifar(str(tmp_path / "other.tar"), str(tmp_path / "x"))


def test_dry_run_end_to_end_without_a_gpu(tmp_path):
    """No GPU here: the check says so, measures each path on JAX (not importing TensorFlow),
    times plain PyTorch, trains on the converted CIFAR and writes its JSON and table."""
    jpeg_tarball(tmp_path / "c.tar.gz", 64, 32)
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "PATH": "/usr/bin:/bin"}  # no nvidia-smi on the PATH
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, "gpu_check.py"), "--backends", "jax",
         "--precisions", "float32", "--cifar", str(tmp_path / "c.tar.gz"), "--budget_s",
         "400", "--train_s", "150", "--out", str(out)],
        capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "no GPU found" in proc.stdout and "dry run" in proc.stdout
    r = json.loads(out.read_text())
    assert r["dry_run"] is True and r["gpu"] is None and r["skipped"] == []
    (speed,) = r["speed"]
    assert speed["backend"] == "jax" and speed["precision"] == "float32", speed
    assert speed["tensorflow_imported"] is False and "error" not in speed
    assert set(speed["paths"]) == set(gpu_check.SPEED_PATHS)
    assert all(v["images_per_s"] > 0 for v in speed["paths"].values())
    assert r["plain_pytorch"]["images_per_s"]["torch_one"] > 0
    tr = r["training"]
    assert tr["rc"] == 0 and tr["backend"] == "jax" and tr["epochs_asked"] >= 1, tr
    assert len(tr["epochs"]) == tr["epochs_asked"]
    assert all(0 <= e["test_accuracy"] <= 1 for e in tr["epochs"])
    assert "| one network (fit) |" in r["table"] and "CIFAR-10 training (jax" in r["table"]


def test_speed_children_keep_the_callers_pythonpath(monkeypatch):
    """On a GPU machine Keras comes from a --target folder on PYTHONPATH: a child that
    replaced PYTHONPATH with the repository alone would not find it."""
    import backend_bench

    seen = {}

    def fake_run(cmd, env, **kwargs):
        seen.update(env)
        return subprocess.CompletedProcess(cmd, 0, stdout='{"backend": "jax"}\n', stderr="")

    monkeypatch.setenv("PYTHONPATH", "/tmp/site")
    monkeypatch.setattr(backend_bench.subprocess, "run", fake_run)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: object())  # "installed"
    out = backend_bench.run_child(backend_bench.parse_args(["--backends", "jax"]), "jax")
    assert out == {"backend": "jax"}
    assert seen["PYTHONPATH"].split(os.pathsep) == [backend_bench.ROOT, "/tmp/site"]
