"""Dataset loading: every supported format, and clear errors on corrupt or malformed input."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from dynofa.errors import DatasetError
from subnets.offline.datasets import ArrayDataset, digits_dataset, load_dataset


def _images(n: int = 12, size: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8), rng.integers(0, 4, size=n)


def write_cifar10_dir(root: Path, per_batch: int = 6, seed: int = 0) -> Path:
    """A tiny CIFAR-10 directory in the real python-pickle format."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"batch_label": name.encode(),
            b"labels": [int(v) for v in rng.integers(0, 10, size=per_batch)],
            b"data": rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8),
            b"filenames": [f"img{i}.png".encode() for i in range(per_batch)],
        }
        with open(root / name, "wb") as fh:
            pickle.dump(batch, fh, protocol=2)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    meta = {b"label_names": [n.encode() for n in names]}
    with open(root / "batches.meta", "wb") as fh:
        pickle.dump(meta, fh, protocol=2)
    return root


def test_npz_nhwc_uint8_is_scaled_and_transposed(tmp_path: Path) -> None:
    x, y = _images()
    np.savez(tmp_path / "val.npz", x=x, y=y)
    ds = load_dataset(tmp_path / "val.npz", normalize=None)
    assert ds.x.shape == (12, 3, 8, 8) and ds.x.dtype == np.float32 and ds.y.dtype == np.int64
    np.testing.assert_allclose(ds.x[3, 1], x[3, :, :, 1] / 255.0, rtol=1e-6)
    assert ds.y.tolist() == y.tolist()


def test_npz_images_labels_keys_and_normalisation(tmp_path: Path) -> None:
    x, y = _images()
    np.savez(tmp_path / "val.npz", images=x.transpose(0, 3, 1, 2), labels=y)
    ds = load_dataset(tmp_path / "val.npz", normalize=((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)))
    np.testing.assert_allclose(ds.x[0, 0], (x[0, :, :, 0] / 255.0 - 0.5) / 0.25, rtol=1e-5, atol=1e-6)


def test_npz_wrong_keys_names_file(tmp_path: Path) -> None:
    np.savez(tmp_path / "bad.npz", a=np.zeros(3))
    with pytest.raises(DatasetError, match=r"bad\.npz.*'x' and 'y'"):
        load_dataset(tmp_path / "bad.npz")


def test_label_count_mismatch(tmp_path: Path) -> None:
    x, y = _images()
    np.savez(tmp_path / "v.npz", x=x, y=y[:5])
    with pytest.raises(DatasetError, match="one label per image"):
        load_dataset(tmp_path / "v.npz")


def test_wrong_image_shape(tmp_path: Path) -> None:
    np.savez(tmp_path / "v.npz", x=np.zeros((4, 5, 6, 7, 8)), y=np.zeros(4, dtype=int))
    with pytest.raises(DatasetError, match="shape"):
        load_dataset(tmp_path / "v.npz")


def test_pickle_tuple_and_dict(tmp_path: Path) -> None:
    x, y = _images()
    with open(tmp_path / "a.pkl", "wb") as fh:
        pickle.dump((x, y), fh)
    with open(tmp_path / "b.pkl", "wb") as fh:
        pickle.dump({"x": x, "y": y.tolist()}, fh)
    a = load_dataset(tmp_path / "a.pkl", normalize="none")
    b = load_dataset(tmp_path / "b.pkl", normalize="none")
    np.testing.assert_array_equal(a.x, b.x)
    assert a.y.tolist() == b.y.tolist() == y.tolist()


def test_corrupt_pickle_names_file(tmp_path: Path) -> None:
    x, y = _images()
    data = pickle.dumps((x, y))
    (tmp_path / "c.pkl").write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=r"c\.pkl.*not a valid pickle"):
        load_dataset(tmp_path / "c.pkl")


def test_pickle_of_wrong_object(tmp_path: Path) -> None:
    with open(tmp_path / "w.pkl", "wb") as fh:
        pickle.dump({"foo": 1}, fh)
    with pytest.raises(DatasetError, match="tuple"):
        load_dataset(tmp_path / "w.pkl")


def test_cifar10_directory(tmp_path: Path) -> None:
    root = write_cifar10_dir(tmp_path / "cifar-10-batches-py")
    test = load_dataset(root, normalize=None)
    train = load_dataset(root, normalize="cifar10", split="train")
    assert test.x.shape == (6, 3, 32, 32) and len(train) == 30
    assert test.classes[0] == "airplane" and test.num_classes == 10
    with open(root / "test_batch", "rb") as fh:
        raw = pickle.load(fh, encoding="bytes")
    np.testing.assert_allclose(test.x[2].reshape(-1), raw[b"data"][2] / 255.0, rtol=1e-6)
    assert test.y.tolist() == raw[b"labels"]


def test_cifar10_missing_and_corrupt_batch(tmp_path: Path) -> None:
    root = write_cifar10_dir(tmp_path / "c")
    (root / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match="lacks data_batch_3"):
        load_dataset(root, split="train")
    (root / "test_batch").write_bytes(b"\x80\x02garbage")
    with pytest.raises(DatasetError, match="test_batch"):
        load_dataset(root)
    with open(root / "test_batch", "wb") as fh:
        pickle.dump({b"data": np.zeros((2, 100), dtype=np.uint8), b"labels": [0, 1]}, fh)
    with pytest.raises(DatasetError, match=r"\[N, 3072\]"):
        load_dataset(root)


def test_image_folder(tmp_path: Path) -> None:
    image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(1)
    for cls in ("cat", "dog"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(3):
            arr = rng.integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
            image.fromarray(arr).save(tmp_path / "imgs" / cls / f"{i}.png")
    (tmp_path / "imgs" / "dog" / "notes.txt").write_text("not an image")
    ds = load_dataset(tmp_path / "imgs", resolution=16)
    assert ds.x.shape == (6, 3, 16, 16) and ds.classes == ["cat", "dog"] and ds.y.tolist() == [0, 0, 0, 1, 1, 1]
    (tmp_path / "imgs" / "cat" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="broken.png"):
        load_dataset(tmp_path / "imgs", resolution=16)


def test_missing_and_empty_paths(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(tmp_path / "nope.npz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no class sub-directories"):
        load_dataset(tmp_path / "empty")
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(DatasetError, match="unknown format"):
        load_dataset(tmp_path / "x.csv")


def test_digits_splits_are_disjoint_and_fixed() -> None:
    parts = {s: digits_dataset(s, resolution=8, normalize=None) for s in ("train", "val", "test")}
    assert sum(len(p) for p in parts.values()) == 1797
    rows = {s: {p.x[i].tobytes() + bytes([int(p.y[i])]) for i in range(len(p))} for s, p in parts.items()}
    # a few digits are exact duplicates in sklearn's set, so compare counts of shared rows loosely
    assert len(rows["train"] & rows["test"]) <= 5 and len(rows["train"] & rows["val"]) <= 5
    again = digits_dataset("test", resolution=8, normalize=None)
    np.testing.assert_array_equal(again.x, parts["test"].x)
    assert set(parts["test"].y.tolist()) == set(range(10))
    big = digits_dataset("val", resolution=32)
    assert big.x.shape == (len(parts["val"]), 3, 32, 32) and abs(float(big.x.mean())) < 0.3


def test_batches_split_and_errors() -> None:
    ds = ArrayDataset(np.zeros((10, 3, 4, 4), np.float32), np.arange(10) % 2)
    sizes = [len(xb) for xb, _ in ds.batches(4)]
    assert sizes == [4, 4, 2]
    shuffled = np.concatenate([yb.numpy() for _, yb in ds.batches(3, shuffle=True, seed=1)])
    assert sorted(shuffled.tolist()) == sorted(ds.y.tolist())
    a, b = ds.split(0.6)
    assert len(a) + len(b) == 10 and set(a.y.tolist()) == {0, 1}
    with pytest.raises(DatasetError):
        ArrayDataset(np.zeros((3, 4, 4), np.float32), np.zeros(3, int))
    with pytest.raises(DatasetError):
        digits_dataset("holdout")


def test_distorted_digits_are_fixed_copies_of_their_own_split() -> None:
    import numpy as np

    clean = digits_dataset("test", resolution=32, normalize=None)
    noisy = digits_dataset("test", resolution=32, normalize=None, distorted=True, copies=3)
    assert noisy.x.shape == (3 * len(clean), 3, 32, 32) and noisy.name.startswith("sklearn-digits-distorted/test")
    assert np.array_equal(noisy.y, np.tile(clean.y, 3))  # every test digit three times, labels kept
    again = digits_dataset("test", resolution=32, normalize=None, distorted=True, copies=3)
    assert np.array_equal(noisy.x, again.x)  # the same array every time (seeded per split and copy)
    first, second = noisy.x[: len(clean)], noisy.x[len(clean) : 2 * len(clean)]
    assert not np.allclose(first, second)  # each copy its own distortion
    assert not np.allclose(first, clean.x) and noisy.x.min() >= 0.0 and noisy.x.max() <= 1.0
    train = digits_dataset("train", resolution=16, normalize=None, distorted=True)
    assert train.x.shape[2:] == (16, 16)
    with pytest.raises(DatasetError, match="copies"):
        digits_dataset("test", copies=2)  # copies only of distorted digits
