"""``pip install .`` beside distributions with generic names (progress, utils, noise).

The project used to install 16 top-level modules (``utils``, ``data``, ``progress``, ...):
pip overwrote files that other distributions own, and their packages shadowed ours
(``ImportError: cannot import name 'rng_for' from 'utils'``). Now it installs one package,
``noisylabels``. This test builds a fresh virtual environment that already holds stand-ins
for the registry's ``progress``, ``utils`` and ``noise`` (installed distributions with a
top-level package of that name each, as the real ones have), installs the project into it
offline, runs both console commands on digits, and uninstalls it again.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest
from conftest import ROOT

# Top-level packages of registry distributions that shared a name with our old modules.
OTHERS = ("progress", "utils", "noise")


def _install_stand_in(site, name):
    """An installed distribution ``name`` 1.0 with a package ``name`` (pip sees it as
    installed: a dist-info with METADATA, RECORD and INSTALLER)."""
    pkg = os.path.join(site, name)
    os.makedirs(pkg)
    init = os.path.join(pkg, "__init__.py")
    with open(init, "w") as f:
        f.write(f"WHO = 'the other {name}'\nclass Progress:\n    pass\n")
    info = os.path.join(site, f"{name}-1.0.dist-info")
    os.makedirs(info)
    with open(os.path.join(info, "METADATA"), "w") as f:
        f.write(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    with open(os.path.join(info, "INSTALLER"), "w") as f:
        f.write("pip\n")
    with open(os.path.join(info, "RECORD"), "w") as f:
        f.write(f"{name}/__init__.py,,\n{name}-1.0.dist-info/METADATA,,\n"
                f"{name}-1.0.dist-info/RECORD,,\n{name}-1.0.dist-info/INSTALLER,,\n")
    return init


def _md5(path):
    with open(path, "rb") as f:
        return hashlib.md5(f.read()).hexdigest()


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A fresh venv holding the stand-ins, which sees this environment's Keras, TensorFlow
    and the other requirements through a .pth file (after its own site-packages, so the
    stand-ins come first, as in a user's environment)."""
    tmp = tmp_path_factory.mktemp("install")
    env_dir = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=300)
    py = str(env_dir / "bin" / "python")
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    with open(os.path.join(site, "zz_outer_env.pth"), "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    inits = {name: _install_stand_in(site, name) for name in OTHERS}
    # A copy of what a clone holds for the build (no .venv, no results).
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), src / name)
    shutil.copytree(os.path.join(ROOT, "noisylabels"), src / "noisylabels",
                    ignore=shutil.ignore_patterns("__pycache__"))
    before = set(os.listdir(site))
    hashes = {name: _md5(p) for name, p in inits.items()}
    r = subprocess.run([py, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                        "--no-index", str(src)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return {"dir": env_dir, "py": py, "site": site, "before": before, "inits": inits,
            "hashes": hashes, "tmp": tmp, "env": env}


def test_install_adds_one_package_and_leaves_the_others_alone(venv):
    added = set(os.listdir(venv["site"])) - venv["before"]
    top_level = {a for a in added if not a.endswith((".dist-info", ".pth"))
                 and a != "__pycache__"}
    assert top_level == {"noisylabels"}
    for name, path in venv["inits"].items():
        assert _md5(path) == venv["hashes"][name], f"pip changed {name}/__init__.py"
    code = ("import progress, utils, noise\n"
            "assert progress.WHO == 'the other progress' and utils.WHO == 'the other utils'\n"
            "import sys, noisylabels\n"
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n"
            "from noisylabels import clean_labels, select_cl, select_ncv\n"
            "from noisylabels.utils import rng_for\n"
            "print(clean_labels.__module__, select_cl.__module__)")
    r = subprocess.run([venv["py"], "-c", code], capture_output=True, text=True,
                       cwd=venv["tmp"], env=venv["env"], timeout=120)
    assert r.returncode == 0, r.stderr
    # `import noisylabels` loads no framework; the API's functions come from the package
    assert r.stdout.split("\n")[:2] == ["[]", "noisylabels.incv noisylabels.selection"]


def test_every_sub_package_is_installed():
    """pyproject.toml lists the packages by name: a new sub-package (algorithms/) left out
    installs without its modules and breaks the console commands."""
    import tomllib

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        listed = set(tomllib.load(f)["tool"]["setuptools"]["packages"])
    found = {os.path.relpath(d, ROOT).replace(os.sep, ".")
             for d, _, files in os.walk(os.path.join(ROOT, "noisylabels"))
             if "__init__.py" in files}
    assert listed == found


@pytest.mark.parametrize("command", ["incv-train", "noisy-cv"])
def test_console_commands_run_beside_the_others(venv, command):
    results = venv["tmp"] / f"runs-{command}"
    flags = {"incv-train": ["--incv_epochs", "1", "--incv_iterations", "1", "--epochs", "1",
                            "--method", "incv"],
             "noisy-cv": ["--epochs", "1"]}[command]
    r = subprocess.run([str(venv["dir"] / "bin" / command), "--dataset", "digits", "--arch",
                        "cnn", "--n_train", "200", "--noise_pattern", "sym", "--noisy_ratio",
                        "0.4", "--results_dir", str(results), "--verbose", "0", *flags],
                       capture_output=True, text=True, cwd=venv["tmp"], env=venv["env"],
                       timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    method = "incv/" if command == "incv-train" else ""
    summary = results / "digits" / "sym" / "0.4" / f"{method}seed0" / "summary.json"
    with open(summary) as f:
        assert json.load(f)["n_train"] == 200


def test_uninstall_leaves_the_others(venv):
    r = subprocess.run([venv["py"], "-m", "pip", "uninstall", "-y", "noisy-label-understanding"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert not os.path.exists(os.path.join(venv["site"], "noisylabels"))
    for name, path in venv["inits"].items():
        assert _md5(path) == venv["hashes"][name]
