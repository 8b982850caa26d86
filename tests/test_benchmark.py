"""tests/benchmark.py without torch: it runs, and the PyTorch rows say n/a."""

import importlib.util
import json
import os
import subprocess
import sys
import types

HERE = os.path.dirname(os.path.abspath(__file__))


def _python_without_torch(tmp_path):
    """An interpreter (this one) on which ``import torch`` fails, whatever is installed."""
    hidden = tmp_path / "hide"
    (hidden / "torch").mkdir(parents=True)
    (hidden / "torch" / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/sh\nPYTHONPATH={hidden} exec {sys.executable} \"$@\"\n")
    fake.chmod(0o755)
    return str(fake)


def test_benchmark_without_torch_prints_na(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, "benchmark.py"), "--images", "32",
         "--batch_size", "16", "--rounds", "1", "--arch", "resnet20",
         "--paths", "keras_fit", "paired_fit", "torch_one", "torch_pair",
         "--torch_python", _python_without_torch(tmp_path), "--out", str(out)],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "PyTorch paths: n/a (torch not importable: hidden by the test)" in proc.stdout
    rows = {line.split("|")[1].strip(): line for line in proc.stdout.splitlines()
            if line.startswith("| ")}
    torch_row = rows["PyTorch one network, channels_last (own process)"]
    assert torch_row.count("n/a") == 6
    pair_row = next(v for k, v in rows.items() if k.startswith("INCV pair: PairedNetworks"))
    assert "n/a" not in pair_row.split("|")[2]  # the Keras paths were measured
    saved = json.loads(out.read_text())
    assert set(saved["paths"]) == {"keras_fit", "paired_fit"}
    assert saved["versions"]["torch"] is None and "hidden by the test" in saved["torch"]
    assert len(saved["paths"]["paired_fit"]["rounds"][0]["loadavg"]) == 3


def test_torch_peer_with_a_missing_interpreter_is_na(tmp_path):
    spec = importlib.util.spec_from_file_location("benchmark", os.path.join(HERE, "benchmark.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)  # parses no flags on import (not __main__)
    args = types.SimpleNamespace(torch_python=str(tmp_path / "no-python"), images=8,
                                 batch_size=4, arch="resnet20", forget_rate=0.2, intra_op=0)
    peer = bench.TorchPeer(args)
    assert peer.error.startswith("cannot start --torch_python")
