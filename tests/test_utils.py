"""utils.py: loaders (on data written here), subsets, pipelines, schedules, metrics, results."""

import json
import os

import keras
import numpy as np
import pytest
from conftest import tiny_classifier, write_cifar

from noisylabels import data, metrics, pipelines, training, utils


def test_cifar10_loader_reads_the_official_layout(tmp_path):
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    written = write_cifar(str(tmp_path / "cifar-10-batches-py"), names, b"labels", 4, 10)
    d = data.load_dataset("cifar10", data_dir=str(tmp_path), download=False)
    assert d.x_train.shape == (20, 32, 32, 3) and d.x_test.shape == (4, 32, 32, 3)
    assert d.x_train.dtype == np.float32 and d.num_classes == 10
    raw, labels = written["data_batch_2"]
    # image 1 of batch 2 is training image 5; pixel (row 3, col 7) of the green plane
    assert d.x_train[5, 3, 7, 1] == pytest.approx(raw[1, 1024 + 3 * 32 + 7] / 255.0)
    assert d.y_train[5] == labels[1]
    assert d.y_test.tolist() == written["test_batch"][1]


def test_cifar_image_size_averages_blocks_of_pixels(tmp_path):
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    write_cifar(str(tmp_path / "cifar-10-batches-py"), names, b"labels", 2, 10)
    full = data.load_dataset("cifar10", data_dir=str(tmp_path), download=False)
    half = data.load_dataset("cifar10", data_dir=str(tmp_path), download=False, image_size=16)
    assert half.x_train.shape == (10, 16, 16, 3) and half.x_test.shape == (2, 16, 16, 3)
    assert half.x_train.dtype == np.float32 and half.y_train.tolist() == full.y_train.tolist()
    # pixel (row 2, col 5) of the blue plane: the mean of the 2x2 block at rows 4-5, cols 10-11
    block = full.x_train[3, 4:6, 10:12, 2]
    assert half.x_train[3, 2, 5, 2] == pytest.approx(float(block.mean()), abs=1e-6)
    eighth = data.load_dataset("cifar10", data_dir=str(tmp_path), download=False, image_size=4)
    assert eighth.x_test[1, 0, 0, 0] == pytest.approx(float(full.x_test[1, :8, :8, 0].mean()),
                                                      abs=1e-6)
    with pytest.raises(ValueError, match="--image_size 12.*divisor of 32: 1, 2, 4, 8, 16, 32"):
        data.load_dataset("cifar10", data_dir=str(tmp_path), download=False, image_size=12)
    with pytest.raises(ValueError, match="--image_size is for image folders and the CIFAR"):
        data.load_dataset("digits", image_size=16)


def test_cifar100_loader_uses_fine_labels(tmp_path):
    write_cifar(str(tmp_path / "cifar-100-python"), ["train", "test"], b"fine_labels", 6, 100)
    d = data.load_dataset("cifar100", data_dir=str(tmp_path), download=False)
    assert d.x_train.shape == (6, 32, 32, 3) and d.x_test.shape == (6, 32, 32, 3)


def test_missing_cifar_says_where_to_put_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        data.load_dataset("cifar10", data_dir=str(tmp_path / "nope"), download=False)


def test_digits_fixed_split_in_unit_range():
    a, b = data.load_dataset("digits"), data.load_dataset("digits")
    assert a.x_train.shape == (1347, 8, 8, 1) and a.x_test.shape == (450, 8, 8, 1)
    assert np.array_equal(a.y_train, b.y_train) and np.array_equal(a.x_test, b.x_test)
    assert 0.0 <= a.x_train.min() and a.x_train.max() == 1.0
    assert np.bincount(a.y_test).min() >= 43  # stratified: ~45 of each digit


def test_npz_dataset(tmp_path):
    rng = np.random.default_rng(0)
    path = str(tmp_path / "mine.npz")
    np.savez(path, x_train=rng.integers(0, 256, (10, 5, 5), dtype=np.uint8),
             y_train=np.arange(10) % 3, x_test=rng.random((4, 5, 5, 2)) * 0 + 0.5,
             y_test=np.arange(4) % 3)
    with pytest.raises(ValueError, match="x_train and x_test"):
        data.load_dataset(path)  # channels differ: 1 vs 2
    np.savez(path, x_train=np.full((10, 5, 5), 255, np.uint8), y_train=np.arange(10) % 3,
             x_test=np.full((4, 5, 5), 0.25), y_test=np.arange(4) % 3)
    d = data.load_dataset(path)
    assert d.name == "mine" and d.x_train.shape == (10, 5, 5, 1) and d.num_classes == 3
    assert d.x_train.max() == 1.0 and d.x_test.max() == 0.25
    np.savez(path, x_train=np.zeros((2, 5, 5)), y_train=[0, 1])
    with pytest.raises(ValueError, match="missing arrays"):
        data.load_dataset(path)
    with pytest.raises(ValueError, match="unknown --dataset"):
        data.load_dataset("mnist")


def test_stratified_subset_is_seeded_and_balanced():
    y = np.repeat(np.arange(10), 100)
    a = data.stratified_subset(y, 200, seed=1)
    assert len(a) == 200 and np.all(np.bincount(y[a]) == 20)
    assert np.array_equal(a, data.stratified_subset(y, 200, seed=1))
    assert not np.array_equal(a, data.stratified_subset(y, 200, seed=2))
    assert len(data.stratified_subset(y, None, seed=0)) == 1000


def test_split_halves_partitions():
    a, b = data.split_halves(11, rng=np.random.default_rng(0), larger_first=True, sort=True)
    assert len(a) == 6 and len(b) == 5
    assert sorted(np.concatenate([a, b])) == list(range(11))
    assert list(a) == sorted(a) and list(b) == sorted(b)
    # INCV's split (default): the odd one out in the second half, in shuffled order; the
    # same draw as noisy CV's for the same generator state
    c, d = data.split_halves(np.arange(11), rng=np.random.default_rng(0))
    assert (len(c), len(d)) == (5, 6) and sorted(np.concatenate([c, d])) == list(range(11))
    assert set(c) < set(a) and list(c) != sorted(c)


def test_piecewise_lr_matches_the_authors_schedule():
    s = training.PiecewiseLR(1e-3, (80, 120, 160, 180), (0.1, 0.01, 0.001, 0.0005),
                          paper_epochs=200, epochs=200)
    assert [s(e) for e in (0, 80, 81, 120, 121, 161, 181)] == pytest.approx(
        [1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-6, 5e-7])
    half = training.PiecewiseLR(1e-3, (20, 30, 40), (0.5, 0.25, 0.1), paper_epochs=50, epochs=25)
    assert [half(e) for e in (10, 11, 15, 16, 20, 21)] == pytest.approx(
        [1e-3, 5e-4, 5e-4, 2.5e-4, 2.5e-4, 1e-4])


def test_top_k_accuracy():
    probs = np.array([[0.1, 0.5, 0.4], [0.6, 0.3, 0.1], [0.2, 0.2, 0.6], [0.4, 0.3, 0.3]])
    labels = np.array([2, 2, 0, 2])
    assert metrics.top_k_accuracy(probs, labels, 1) == 0.0
    # k=2: row 0 (classes 1, 2) yes, row 1 (0, 1) no, row 2 (2, then 0 before 1) yes,
    # row 3 (0, then 1 before 2 on the tie) no
    assert metrics.top_k_accuracy(probs, labels, 2) == 0.5
    assert metrics.top_k_accuracy(probs, labels, 3) == 1.0


def test_selection_metrics_and_confusion():
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_noisy = np.array([0, 1, 1, 1, 0, 2])   # clean: 0, 2, 3, 5
    selected = np.array([1, 1, 0, 1, 0, 0], bool)  # picks clean 0, 3 and noisy 1
    m = metrics.selection_metrics(y_true, y_noisy, selected)
    assert m["label_precision"] == pytest.approx(2 / 3)
    assert m["label_recall"] == pytest.approx(2 / 4)
    assert np.isnan(metrics.selection_metrics(y_true, y_noisy, np.zeros(6, bool))
                    ["label_precision"])
    cm = metrics.normalized_confusion(y_true, y_noisy, 4)
    assert cm[0].tolist() == [0.5, 0.5, 0, 0] and cm[3].tolist() == [0, 0, 0, 0]
    ce = metrics.cross_entropy(np.array([[0.5, 0.5], [0.1, 0.9]]), np.array([0, 1]))
    assert ce == pytest.approx([np.log(2), -np.log(0.9)])


def test_run_dir_refuses_overwrites_and_resumes(tmp_path):
    out = str(tmp_path / "run")
    utils.prepare_run_dir(out)
    utils.write_json(os.path.join(out, "a.json"), {"x": float("nan"), "y": np.arange(2)})
    assert json.load(open(os.path.join(out, "a.json"))) == {"x": None, "y": [0, 1]}
    with pytest.raises(FileExistsError, match="--overwrite"):
        utils.prepare_run_dir(out)
    utils.prepare_run_dir(out, resume=True)
    assert os.listdir(out) == ["a.json"]  # no temporary files left behind
    utils.prepare_run_dir(out, overwrite=True)
    assert os.listdir(out) == []


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    path = str(tmp_path / "s.json")
    utils.write_json(path, {"ok": 1})
    with pytest.raises(TypeError):
        utils.write_json(path, {"bad": object()})
    assert json.load(open(path)) == {"ok": 1} and os.listdir(tmp_path) == ["s.json"]


def test_train_dataset_visits_every_sample_once_per_epoch():
    x = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1)
    ds = pipelines.make_train_dataset(x, np.arange(10), batch_size=4, seed=0)
    epoch = [(xb.numpy().ravel(), yb.numpy()) for xb, yb in ds]
    assert [len(b[1]) for b in epoch] == [4, 4, 2]
    assert sorted(np.concatenate([b[1] for b in epoch])) == list(range(10))
    assert all(np.array_equal(xb, yb) for xb, yb in epoch)  # pairs stay together
    again = np.concatenate([yb.numpy() for _, yb in ds])
    assert not np.array_equal(again, np.concatenate([b[1] for b in epoch]))  # reshuffled


def test_pipelines_draw_each_epochs_order_from_seed_and_epoch():
    """A pipeline started at first_epoch=k (a resumed run) yields what the uninterrupted
    pipeline yields in its epoch k: one training run's batches do not depend on where it
    was resumed. C is read from a fresh permutation every epoch."""
    x = np.arange(11, dtype=np.float32).reshape(11, 1, 1, 1)
    y = np.arange(11)

    def epochs(ds, n):
        return [[tuple(np.ravel(b[1])) for b in ds] for _ in range(n)]

    full = epochs(pipelines.make_train_dataset(x, y, batch_size=4, seed=3), 4)
    assert len({tuple(e) for e in full}) == 4  # every epoch its own order
    assert epochs(pipelines.make_train_dataset(x, y, batch_size=4, seed=3, first_epoch=2), 2) \
        == full[2:]
    assert epochs(pipelines.make_train_dataset(x, y, batch_size=4, seed=4), 1) != full[:1]
    clean = np.ones(11, bool)
    make = lambda first: pipelines.make_coteaching_dataset(  # noqa: E731
        x, y, clean, np.arange(7), np.arange(7, 11), batch_size=3, c_batch_size=2, seed=3,
        first_epoch=first)
    cot = epochs(make(0), 3)
    assert epochs(make(1), 2) == cot[1:]
    for e in cot:  # 3 steps x 2 C samples: one permutation of C, then 2 of the next
        c_part = [i for batch in e for i in batch if i >= 7]
        assert len(c_part) == 6 and sorted(c_part[:4]) == [7, 8, 9, 10]


def test_augmentation_is_seeded_and_shape_preserving():
    x = np.random.default_rng(0).random((8, 32, 32, 3)).astype(np.float32)
    outs = [pipelines.make_augmenter("standard", seed=3)(x, training=True) for _ in range(2)]
    a, b = (keras.ops.convert_to_numpy(o) for o in outs)
    assert a.shape == x.shape and np.array_equal(a, b) and not np.array_equal(a, x)
    assert pipelines.make_augmenter("none", seed=0) is None
    assert pipelines.resolve_augmentation("auto", "digits") == "none"
    assert pipelines.resolve_augmentation("auto", "cifar10") == "standard"
    with pytest.raises(ValueError, match="--augment"):
        pipelines.resolve_augmentation("crop", "cifar10")


def test_coteaching_dataset_joins_s_and_c_batches():
    n = 20
    x = np.arange(n, dtype=np.float32).reshape(n, 1, 1, 1)
    y = np.arange(n) % 3
    clean = np.arange(n) % 2 == 0
    s_idx, c_idx = np.arange(0, 10), np.arange(10, 20)
    ds = pipelines.make_coteaching_dataset(x, y, clean, s_idx, c_idx, batch_size=4,
                                       c_batch_size=2, seed=0)
    batches = list(ds)
    assert len(batches) == 3  # one pass over S: 4 + 4 + 2
    seen_s = []
    for inputs, yb in batches:
        ids = inputs["image"].numpy().ravel().astype(int)
        f = inputs["from_s"].numpy()
        b_s = int(f.sum())
        assert len(ids) == b_s + 2 and np.all(f[:b_s] == 1) and np.all(f[b_s:] == 0)
        assert set(ids[:b_s]) <= set(s_idx) and set(ids[b_s:]) <= set(c_idx)
        assert np.array_equal(yb.numpy(), y[ids])
        assert np.array_equal(inputs["clean"].numpy(), clean[ids].astype(np.float32))
        seen_s += ids[:b_s].tolist()
    assert sorted(seen_s) == list(s_idx)
    only_s = list(pipelines.make_coteaching_dataset(x, y, clean, s_idx, c_idx, batch_size=4,
                                                c_batch_size=0, seed=0))
    assert all(inp["from_s"].numpy().all() for inp, _ in only_s)


def test_epoch_schedule_resets_adam_at_each_drop_only():
    m = tiny_classifier()
    x, y = np.random.default_rng(0).random((16, 3)), np.arange(16) % 2
    seen = []
    probe = keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: seen.append(
        (float(m.optimizer.learning_rate.numpy()), int(m.optimizer.iterations.numpy()))))
    sched = training.PiecewiseLR(1e-2, (1,), (0.1,), paper_epochs=4, epochs=4)
    m.fit(x, y, batch_size=8, epochs=4, verbose=0,
          callbacks=[training.EpochSchedule(sched, [m.optimizer]), probe])
    # lr drops before epoch index 2: Adam's step count restarts there, not elsewhere
    assert [s[0] for s in seen] == pytest.approx([1e-2, 1e-2, 1e-3, 1e-3])
    assert [s[1] for s in seen] == [0, 2, 0, 2]


def test_checkpoint_round_trip(tmp_path):
    m = tiny_classifier()
    x, y = np.random.default_rng(0).random((16, 3)), np.arange(16) % 2
    path = str(tmp_path / "ckpt.npz")
    m.fit(x, y, epochs=2, verbose=0, callbacks=[training.EpochCheckpoint(path, [m.optimizer])])
    saved = [w.copy() for w in m.get_weights()]
    slots = [keras.ops.convert_to_numpy(v).copy() for v in m.optimizer.variables]
    fresh = tiny_classifier()
    fresh.optimizer.build(fresh.trainable_variables)
    assert training.restore_checkpoint(path, fresh, [fresh.optimizer]) == 2
    assert all(np.array_equal(a, b) for a, b in zip(saved, fresh.get_weights()))
    assert all(np.array_equal(a, keras.ops.convert_to_numpy(b))
               for a, b in zip(slots, fresh.optimizer.variables))


def test_adam_epsilon_is_the_authors():
    # The authors passed epsilon=1e-8 to every Adam; Keras 3's default is 1e-7.
    assert training.ADAM_EPSILON == 1e-8
    assert training.adam(1e-3).epsilon == 1e-8
    assert tiny_classifier().optimizer.epsilon == 1e-8


def _adam_state(opt):
    return [keras.ops.convert_to_numpy(v).copy() for v in opt.variables
            if "learning_rate" not in v.path]


def test_train_and_predict_keeps_best_epochs_optimizer_and_can_carry_it():
    m = tiny_classifier()
    m.layers[-1].set_weights([np.zeros((3, 2), "float32"), np.array([5.0, 0.0], "float32")])
    initial = m.get_weights()
    rng = np.random.default_rng(0)
    x, x_held = rng.random((16, 3)), rng.random((8, 3))
    y, y_held = np.zeros(16, int), np.zeros(8, int)  # held-out accuracy 1 from epoch 1 on
    first_epoch = []
    probe = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: first_epoch.append(
        _adam_state(m.optimizer)) if e == 0 else None)
    kw = dict(batch_size=8, schedule=lambda e, lr=None: 1e-2, verbose=0)
    _, info = training.train_and_predict(m, initial, x, y, x_held, y_held, epochs=3,
                                         keep_best=True, callbacks=[probe], **kw)
    # The best epoch (the first of equal ones) comes back with its Adam state, as the
    # authors' load_model restored it: 2 steps, not the 6 the run made.
    assert info["best_epoch"] == 1 and int(m.optimizer.iterations.numpy()) == 2
    assert all(np.array_equal(a, b) for a, b in zip(first_epoch[0], _adam_state(m.optimizer)))
    # carry: the next run starts from that state (weights reset only) ...
    training.train_and_predict(m, initial, x, y, x_held, y_held, epochs=1,
                               reset_optimizer_state=False, **kw)
    assert int(m.optimizer.iterations.numpy()) == 4
    # ... fresh (the default): from a zeroed Adam.
    training.train_and_predict(m, initial, x, y, x_held, y_held, epochs=1, **kw)
    assert int(m.optimizer.iterations.numpy()) == 2


def test_provenance_tells_official_files_from_other_copies(tmp_path, monkeypatch):
    import hashlib

    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    folder = str(tmp_path / "cifar-10-batches-py")
    write_cifar(folder, names, b"labels", 4, 10)
    d = data.load_dataset("cifar10", data_dir=str(tmp_path), download=False)
    md5 = {n: hashlib.md5(open(os.path.join(folder, n), "rb").read()).hexdigest()
           for n in names}
    assert d.provenance == {"official": False, "files": md5}
    assert "NOT the official" in data.describe_provenance(d.provenance)
    # The same files counted as official when their md5s are the listed ones.
    monkeypatch.setitem(data.OFFICIAL_MD5, "cifar10", dict(md5))
    assert data.data_provenance("cifar10", folder)["official"] is True
    # Hashed once per process: a cached digest is reused while the file is unchanged.
    path = os.path.join(folder, "test_batch")
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    monkeypatch.setitem(data._MD5_CACHE, key, "cached")
    assert data.file_md5(path) == "cached"
    assert data.load_dataset("digits").provenance is None
