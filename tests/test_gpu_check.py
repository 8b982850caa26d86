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


def test_jpeg_tarball_becomes_the_python_layout_in_order(tmp_path):
    labels = gpu_check.write_jpeg_tarball(tmp_path / "c.tar.gz", 12, 5)
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


@pytest.fixture(scope="module")
def faulted_dry_run(tmp_path_factory):
    """One dry run for the tests below (it costs over a minute): JAX measured for real,
    PyTorch's speed child failing on an import, TensorFlow's hanging until its 3 s timeout
    (the --fault test hook), then plain PyTorch and the training after both failures."""
    tmp = tmp_path_factory.mktemp("gpu_check")
    gpu_check.write_jpeg_tarball(tmp / "c.tar.gz", 64, 32)
    out = tmp / "out"
    env = {**os.environ, "PATH": "/usr/bin:/bin"}  # no nvidia-smi on the PATH
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, "gpu_check.py"), "--backends", "jax", "torch",
         "tensorflow", "--precisions", "float32", "--cifar", str(tmp / "c.tar.gz"),
         "--budget_s", "600", "--train_s", "150", "--out", str(out),
         "--fault", "speed torch float32=import", "speed tensorflow float32=hang:3"],
        capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc, out, json.loads((out / "gpu_check.json").read_text())


def test_dry_run_end_to_end_without_a_gpu(faulted_dry_run):
    """No GPU here: the check says so, measures each path on JAX (not importing TensorFlow),
    times plain PyTorch, trains on the converted CIFAR and writes its JSON and table."""
    proc, out, r = faulted_dry_run
    assert "no GPU found" in proc.stdout and "dry run" in proc.stdout
    assert r["dry_run"] is True and r["gpu"] is None and r["skipped"] == []
    speed = r["speed"][0]
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
    # the table is printed and written beside the JSON
    assert r["table"] in proc.stdout
    assert (out / "gpu_check.md").read_text() == r["table"] + "\n"
    assert r["in_progress"] is None and not list(out.glob(".tmp-*"))


def test_failed_and_hung_stages_are_recorded_and_the_others_kept(faulted_dry_run):
    """A child that fails on an import and one that hangs: each is recorded with its error,
    in the JSON and as n/a (error) in its column, and every later stage still ran."""
    proc, out, r = faulted_dry_run
    stages = {st["stage"]: st for st in r["stages"]}
    assert [st["stage"] for st in r["stages"]] == [
        "CIFAR-10 preparation", "speed jax float32", "speed torch float32",
        "speed tensorflow float32", "plain PyTorch", "training"]
    assert {k: st["status"] for k, st in stages.items()} == {
        "CIFAR-10 preparation": "ok", "speed jax float32": "ok",
        "speed torch float32": "failed", "speed tensorflow float32": "failed",
        "plain PyTorch": "ok", "training": "ok"}
    missing = "ModuleNotFoundError: No module named 'gpu_check_fault_missing_module'"
    torch_speed, tf_speed = r["speed"][1:]
    assert torch_speed["backend"] == "torch" and missing in torch_speed["error"]
    assert tf_speed["backend"] == "tensorflow"
    assert tf_speed["error"] == "timed out after 3 s", tf_speed
    assert stages["speed torch float32"]["error"] == torch_speed["error"]
    assert stages["speed tensorflow float32"]["seconds"] < 60
    rows = {line.split(" | ")[0]: line for line in r["table"].splitlines()}
    assert f"| n/a (exit 1: {missing}) | n/a (timed out after 3 s) |" in \
        rows["| input pipeline alone"]
    assert "| speed torch float32 | failed |" in r["table"]
    assert "failed: speed torch float32, speed tensorflow float32" in r["table"]


def fake_stages(monkeypatch, speeds, peer):
    """gpu_check.main in this process, its children replaced: ``speeds`` maps a backend to
    its speed child's dict or the exception it raises; ``peer`` is plain PyTorch's stand-in.
    Every backend counts as installed but TensorFlow."""
    def speed(b, p, sizes, timeout, fault=None):
        if isinstance(speeds[b], Exception):
            raise speeds[b]
        return speeds[b]

    monkeypatch.setattr(gpu_check, "find_gpu", lambda: (None, "test"))
    monkeypatch.setattr(gpu_check, "installed", lambda name: name != "tensorflow")
    monkeypatch.setattr(gpu_check, "speed", speed)
    monkeypatch.setattr(gpu_check, "plain_pytorch", peer)


def test_the_json_is_rewritten_after_every_stage(tmp_path, monkeypatch, capsys):
    """What a check stopped during plain PyTorch leaves: the two speed stages before it
    (one measured, one raising in the parent), on disk, and the stage it was stopped in."""
    seen = {}

    def peer(sizes, timeout, fault=None):
        seen.update(json.loads((tmp_path / "gpu_check.json").read_text()))
        return {"error": "plain PyTorch peer failed: exit -11: Segmentation fault"}

    fake_stages(monkeypatch, {"jax": {"paths": {"one": {"images_per_s": 123.0}}},
                              "torch": RuntimeError("CUDA error: out of\nmemory")}, peer)
    args = gpu_check.parse_args(["--backends", "jax", "torch", "tensorflow", "--precisions",
                                 "float32", "--out", str(tmp_path)])
    assert gpu_check.main(args) == 0
    assert seen["in_progress"] == "plain PyTorch"
    assert [(st["stage"], st["status"]) for st in seen["stages"]] == [
        ("speed tensorflow", "skipped"), ("speed jax float32", "ok"),
        ("speed torch float32", "failed")]
    assert seen["speed"][0]["paths"]["one"]["images_per_s"] == 123.0
    assert seen["speed"][1] == {"backend": "torch", "precision": "float32",
                                "error": "RuntimeError: CUDA error: out of memory"}
    assert "| 123 | n/a (RuntimeError: CUDA error: out of memory) |" in seen["table"]
    final = json.loads((tmp_path / "gpu_check.json").read_text())
    last = final["stages"][-1]
    assert (last["stage"], last["status"], last["error"]) == (
        "plain PyTorch", "failed", "plain PyTorch peer failed: exit -11: Segmentation fault")
    assert "plain PyTorch ResNet-32: n/a (plain PyTorch peer failed: exit -11: " \
        "Segmentation fault)" in final["table"]
    assert final["in_progress"] is None and final["table"] in capsys.readouterr().out


def test_every_stage_failed(tmp_path, monkeypatch, capsys):
    """Nothing measured: the JSON and the table are still written, each stage says why,
    and the exit status is 1."""
    def peer(sizes, timeout, fault=None):
        raise OSError("no such device")

    error = "exit 1: ModuleNotFoundError: No module named 'typing_extensions'"
    fake_stages(monkeypatch, {"jax": {"backend": "jax", "error": error},
                              "torch": {"backend": "torch", "error": "timed out after 9 s"}},
                peer)
    (tmp_path / "cifar.tar").write_bytes(b"not a tarball")
    args = gpu_check.parse_args(["--backends", "jax", "torch", "--out", str(tmp_path),
                                 "--cifar", str(tmp_path / "cifar.tar")])
    assert gpu_check.main(args) == 1
    assert "no stage measured anything" in capsys.readouterr().out
    r = json.loads((tmp_path / "gpu_check.json").read_text())
    assert {st["stage"]: st["status"] for st in r["stages"]} == {
        "CIFAR-10 preparation": "failed", "speed jax float32": "failed",
        "speed torch float32": "failed", "plain PyTorch": "failed", "training": "skipped",
        "speed jax mixed_bfloat16": "failed", "speed torch mixed_bfloat16": "failed"}
    assert r["stages"][0]["error"].startswith("ReadError: ")
    table = r["table"]
    assert table.count(f"n/a ({error})") == 2 * len(gpu_check.SPEED_PATHS)
    assert table.count("n/a (timed out after 9 s)") == 2 * len(gpu_check.SPEED_PATHS)
    assert "plain PyTorch ResNet-32: n/a (OSError: no such device)" in table
    assert "| training | skipped |  | the CIFAR-10 preparation failed |" in table
    assert "(nothing measured)" in table


def test_report_of_a_failed_child_without_its_precision():
    """The shape that crashed report() (KeyError: 'precision'): a failed child's dict."""
    error = "exit 1: ModuleNotFoundError: No module named 'typing_extensions'"
    table = gpu_check.report({"gpu": None, "sizes": gpu_check.DRY_SIZES, "skipped": [],
                              "speed": [{"backend": "jax", "error": error}]})
    assert f"| one network (fit) | n/a ({error}) |" in table
    assert "| jax ? |" in table


def test_fault_argument_errors(capsys):
    for bad in ("speed jx float32=import", "training=hang", "training=crash",
                "plain PyTorch=import:3"):
        with pytest.raises(SystemExit):
            gpu_check.parse_args(["--fault", bad])
        assert "--fault:" in capsys.readouterr().err
    assert gpu_check.parse_faults(["training=hang:2.5", "speed jax float32=import"]) == {
        "training": ("hang", 2.5), "speed jax float32": ("import", 0.0)}


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


def test_plain_pytorch_failures_are_one_line():
    """The peer's child dying before its JSON line, or hanging: one line saying how (it was
    'list index out of range', or the whole command line)."""
    import backend_bench

    args = backend_bench.parse_args(["--timeout", "1"])
    died = backend_bench.torch_peer(args, command=[
        sys.executable, "-c", "import sys; print('CUDA error: no kernel image', file=sys.stderr)"
        "; sys.exit(3)"])
    assert died == {"error": "plain PyTorch peer failed: exit 3: CUDA error: no kernel image"}
    hung = gpu_check.plain_pytorch(gpu_check.DRY_SIZES, 60, fault=("hang", 1.0))
    assert hung == {"error": "plain PyTorch peer timed out after 1 s"}
