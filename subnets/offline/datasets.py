"""Labelled image datasets held in memory: the user's validation data and the bundled digits.

Everything is an :class:`ArrayDataset`: ``x`` float32 NCHW, ``y`` int64. :func:`load_dataset`
reads local files only (nothing is ever downloaded):

* ``.npz`` with arrays ``x``/``y`` (or ``images``/``labels``), NCHW or NHWC, uint8 or float;
* a pickle of ``(x, y)`` or ``{"x": ..., "y": ...}`` (only load pickles you trust);
* a CIFAR-10 python-pickle directory (``data_batch_1..5``, ``test_batch``, ``batches.meta``);
* an ImageFolder directory (one sub-directory of images per class; needs Pillow,
  ``pip install dynofa[images]``).

:func:`digits_dataset` is scikit-learn's bundled handwritten digits (1797 8x8 images, shipped
inside scikit-learn, no download), upsampled to the requested resolution with 3 channels and
split into fixed, disjoint train/val/test parts; val and test are never used for training.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dynofa.errors import DatasetError

if TYPE_CHECKING:
    import torch

#: per-channel (mean, std) of inputs scaled to [0, 1]
NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    # the digits' own statistics after scaling 0..16 to [0, 1] (computed on the whole set, a constant)
    "digits": ((0.3053, 0.3053, 0.3053), (0.3760, 0.3760, 0.3760)),
}
Normalization = str | tuple[Sequence[float], Sequence[float]] | None

CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".gif", ".tif", ".tiff", ".webp")

DIGITS_SPLITS = ("train", "val", "test")
#: fractions of the digits set per split; stratified per class, so every split holds every digit
DIGITS_FRACTIONS = (0.6, 0.2, 0.2)


@dataclass
class ArrayDataset:
    """A labelled image set in memory: ``x`` float32 [N, C, H, W], ``y`` int64 [N]."""

    x: np.ndarray
    y: np.ndarray
    name: str = ""
    classes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        where = self.name or "dataset"
        if self.x.ndim != 4:
            raise DatasetError(f"{where}: images must be a 4-D array [N, C, H, W], got shape {self.x.shape}")
        if self.y.ndim != 1 or len(self.y) != len(self.x):
            raise DatasetError(
                f"{where}: labels must be a 1-D array with one label per image; "
                f"got {self.y.shape} labels for {len(self.x)} images"
            )
        if len(self.x) == 0:
            raise DatasetError(f"{where}: holds no images")
        if self.y.min() < 0:
            raise DatasetError(f"{where}: labels must be non-negative class indices, found {int(self.y.min())}")
        self.x = np.ascontiguousarray(self.x, dtype=np.float32)
        self.y = np.ascontiguousarray(self.y, dtype=np.int64)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def num_classes(self) -> int:
        return max(len(self.classes), int(self.y.max()) + 1)

    @property
    def resolution(self) -> int:
        """Image height (datasets here are square; width may differ for user data)."""
        return int(self.x.shape[2])

    @property
    def channels(self) -> int:
        return int(self.x.shape[1])

    def batches(
        self, batch_size: int, shuffle: bool = False, seed: int = 0, device: str | torch.device = "cpu"
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(images, labels)`` torch tensors; the last batch may be smaller."""
        import torch

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        order = np.random.default_rng(seed).permutation(len(self)) if shuffle else np.arange(len(self))
        for start in range(0, len(self), batch_size):
            idx = order[start : start + batch_size]
            xb = torch.from_numpy(self.x[idx] if shuffle else self.x[start : start + batch_size])
            yb = torch.from_numpy(self.y[idx] if shuffle else self.y[start : start + batch_size])
            yield xb.to(device), yb.to(device)

    def subset(self, indices: Sequence[int] | np.ndarray, name: str | None = None) -> ArrayDataset:
        idx = np.asarray(indices, dtype=np.int64)
        return ArrayDataset(self.x[idx], self.y[idx], name=self.name if name is None else name, classes=self.classes)

    def split(self, fraction: float, seed: int = 0) -> tuple[ArrayDataset, ArrayDataset]:
        """Split into two disjoint parts, stratified by class: ``fraction`` of each class goes first."""
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"split fraction must be in (0, 1), got {fraction}")
        rng = np.random.default_rng(seed)
        first: list[np.ndarray] = []
        second: list[np.ndarray] = []
        for label in np.unique(self.y):
            members = rng.permutation(np.flatnonzero(self.y == label))
            cut = int(round(fraction * len(members)))
            first.append(members[:cut])
            second.append(members[cut:])
        a, b = np.sort(np.concatenate(first)), np.sort(np.concatenate(second))
        if len(a) == 0 or len(b) == 0:
            raise DatasetError(f"{self.name or 'dataset'}: too few images ({len(self)}) to split at {fraction}")
        return self.subset(a, f"{self.name}[split a]"), self.subset(b, f"{self.name}[split b]")

    def head(self, count: int) -> ArrayDataset:
        """The first ``count`` images (all of them if fewer)."""
        return self.subset(np.arange(min(count, len(self))))

    def resized(self, resolution: int) -> ArrayDataset:
        """Bilinearly resized copy (square), e.g. to evaluate a subnet at its input resolution."""
        if resolution == self.resolution and self.x.shape[3] == resolution:
            return self
        return ArrayDataset(_resize(self.x, resolution), self.y, name=self.name, classes=self.classes)


# --------------------------------------------------------------------------- loading


def load_dataset(
    path: str | os.PathLike[str],
    normalize: Normalization = "imagenet",
    resolution: int | None = None,
    split: str = "test",
    channels: int = 3,
    limit: int | None = None,
) -> ArrayDataset:
    """Load a local labelled image set (see the module docstring for the formats).

    Pixel values are scaled to [0, 1] (uint8 divided by 255; float arrays are taken as already in
    [0, 1]) and then normalised with ``normalize``: a name from :data:`NORMALIZATIONS`, a
    ``(mean, std)`` pair, or ``None``/``"none"`` to leave them as they are. ``split`` picks the
    CIFAR-10 part ("train" or "test"). Grayscale images are repeated to ``channels`` channels.
    ``resolution`` resizes (ImageFolder images default to 224, centre-cropped). ``limit`` keeps the
    first ``limit`` images.
    """
    source = Path(path)
    if not source.exists():
        raise DatasetError(f"dataset {source} does not exist")
    if source.is_dir():
        if _is_cifar10_dir(source):
            x, y, classes = _load_cifar10_dir(source, split, limit)
        else:
            x, y, classes = _load_image_folder(source, resolution or 224, limit)
    else:
        suffix = source.suffix.lower()
        if suffix == ".npz":
            x, y = _load_npz(source)
        elif suffix in (".pkl", ".pickle", ".p") or _looks_like_pickle(source):
            x, y = _load_pickle(source)
        else:
            raise DatasetError(
                f"dataset {source}: unknown format {suffix or '(no suffix)'}; give an .npz file with arrays x/y, "
                "a pickle (.pkl) of (x, y), a CIFAR-10 python directory, or an ImageFolder directory"
            )
        classes = []
    if limit is not None:
        x, y = x[:limit], y[:limit]
    images = _to_nchw_unit(x, source, channels)
    labels = _labels(y, len(images), source)
    if resolution is not None and (images.shape[2] != resolution or images.shape[3] != resolution):
        images = _resize(images, resolution)
    images = apply_normalization(images, normalize, source)
    return ArrayDataset(images, labels, name=source.name, classes=classes)


def apply_normalization(x: np.ndarray, normalize: Normalization, where: object = "dataset") -> np.ndarray:
    """Per-channel ``(x - mean) / std`` for images already scaled to [0, 1]."""
    if normalize is None or normalize == "none":
        return x
    if isinstance(normalize, str):
        if normalize not in NORMALIZATIONS:
            raise DatasetError(
                f"{where}: unknown normalisation {normalize!r}; use one of {', '.join(NORMALIZATIONS)}, "
                "'none', or a (mean, std) pair"
            )
        pair: tuple[Sequence[float], Sequence[float]] = NORMALIZATIONS[normalize]
    else:
        pair = normalize
    mean_t, std_t = pair
    mean = np.asarray(mean_t, dtype=np.float32)
    std = np.asarray(std_t, dtype=np.float32)
    if mean.shape != std.shape or mean.ndim != 1 or mean.shape[0] not in (1, x.shape[1]):
        raise DatasetError(f"{where}: normalisation mean/std must have 1 or {x.shape[1]} values each")
    if np.any(std <= 0):
        raise DatasetError(f"{where}: normalisation std must be positive")
    return ((x - mean[None, :, None, None]) / std[None, :, None, None]).astype(np.float32)


def _looks_like_pickle(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(2)
    except OSError:
        return False
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def _load_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            keys = set(data.files)
            for xk, yk in (("x", "y"), ("images", "labels"), ("X", "y"), ("data", "labels")):
                if xk in keys and yk in keys:
                    return np.asarray(data[xk]), np.asarray(data[yk])
    except (OSError, ValueError, EOFError) as exc:
        raise DatasetError(f"dataset {path} is not a readable .npz file: {exc}") from None
    raise DatasetError(
        f"dataset {path}: .npz must hold arrays 'x' and 'y' (or 'images' and 'labels'); it holds {sorted(keys)}"
    )


def _unpickle(path: Path) -> Any:
    try:
        with open(path, "rb") as fh:
            return pickle.load(fh, encoding="bytes")
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # noqa: BLE001 - unpickling corrupt data raises almost anything
        raise DatasetError(f"{path} is not a valid pickle file (corrupt or truncated): {exc}") from None


def _get(mapping: dict[Any, Any], *names: str) -> Any:
    for name in names:
        for key in (name, name.encode()):
            if key in mapping:
                return mapping[key]
    return None


def _load_pickle(path: Path) -> tuple[np.ndarray, np.ndarray]:
    obj = _unpickle(path)
    if isinstance(obj, (tuple, list)) and len(obj) == 2:
        return np.asarray(obj[0]), np.asarray(obj[1])
    if isinstance(obj, dict):
        x = _get(obj, "x", "images", "data")
        y = _get(obj, "y", "labels")
        if x is not None and y is not None:
            x = np.asarray(x)
            if x.ndim == 2 and x.shape[1] == 3072:  # a single CIFAR-10 batch file
                x = x.reshape(-1, 3, 32, 32)
            return x, np.asarray(y)
    raise DatasetError(
        f"dataset {path}: the pickle must hold a tuple (x, y) or a dict with keys 'x' and 'y'; "
        f"found {type(obj).__name__}"
    )


def _is_cifar10_dir(path: Path) -> bool:
    return (path / CIFAR10_TEST_FILE).is_file() or (path / CIFAR10_TRAIN_FILES[0]).is_file()


def _cifar10_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    obj = _unpickle(path)
    if not isinstance(obj, dict):
        raise DatasetError(
            f"CIFAR-10 batch {path}: expected a dict with b'data' and b'labels', got {type(obj).__name__}"
        )
    data = _get(obj, "data")
    labels = _get(obj, "labels", "fine_labels")
    if data is None or labels is None:
        raise DatasetError(f"CIFAR-10 batch {path}: missing b'data' or b'labels' (keys: {sorted(map(str, obj))})")
    data = np.asarray(data)
    if data.ndim != 2 or data.shape[1] != 3072:
        raise DatasetError(f"CIFAR-10 batch {path}: b'data' must be [N, 3072] uint8, got shape {data.shape}")
    if len(labels) != data.shape[0]:
        raise DatasetError(f"CIFAR-10 batch {path}: {data.shape[0]} images but {len(labels)} labels")
    return data.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


def _load_cifar10_dir(path: Path, split: str, limit: int | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    if split == "train":
        files = [path / name for name in CIFAR10_TRAIN_FILES]
    elif split == "test":
        files = [path / CIFAR10_TEST_FILE]
    else:
        raise DatasetError(f"CIFAR-10 directory {path}: split must be 'train' or 'test', got {split!r}")
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise DatasetError(f"CIFAR-10 directory {path} lacks {', '.join(missing)} (needed for split {split!r})")
    xs, ys = [], []
    count = 0
    for file in files:
        x, y = _cifar10_batch(file)
        xs.append(x)
        ys.append(y)
        count += len(x)
        if limit is not None and count >= limit:
            break
    classes: list[str] = []
    meta = path / "batches.meta"
    if meta.is_file():
        obj = _unpickle(meta)
        names = _get(obj, "label_names") if isinstance(obj, dict) else None
        if names is not None:
            classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    return np.concatenate(xs), np.concatenate(ys), classes


def _load_image_folder(path: Path, resolution: int, limit: int | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    try:
        from PIL import Image
    except ImportError:
        raise DatasetError(
            f"reading the image directory {path} needs Pillow: pip install 'dynofa[images]' (or pip install pillow)"
        ) from None
    classes = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DatasetError(
            f"dataset directory {path} has no class sub-directories (ImageFolder layout: {path}/<class>/<image>) "
            "and is not a CIFAR-10 python directory (data_batch_1..5, test_batch)"
        )
    items = [
        (file, label)
        for label, name in enumerate(classes)
        for file in sorted((path / name).iterdir())
        if file.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not items:
        raise DatasetError(f"dataset directory {path}: no images ({', '.join(IMAGE_SUFFIXES)}) in its class folders")
    if limit is not None:
        # keep classes balanced when only part of the set is wanted
        rng = np.random.default_rng(0)
        items = [items[i] for i in sorted(rng.permutation(len(items))[:limit])]
    x = np.empty((len(items), 3, resolution, resolution), dtype=np.uint8)
    for i, (file, _) in enumerate(items):
        try:
            with Image.open(file) as img:
                x[i] = _center_crop(img.convert("RGB"), resolution)
        except (OSError, ValueError) as exc:
            raise DatasetError(f"image {file} cannot be read: {exc}") from None
    return x, np.asarray([label for _, label in items], dtype=np.int64), classes


def _center_crop(img: Any, resolution: int) -> np.ndarray:
    """ImageNet-style evaluation transform: resize the short side to resolution/0.875, crop the centre."""
    from PIL import Image

    short = int(round(resolution / 0.875))
    w, h = img.size
    scale = short / min(w, h)
    img = img.resize((max(resolution, round(w * scale)), max(resolution, round(h * scale))), Image.Resampling.BILINEAR)
    w, h = img.size
    left, top = (w - resolution) // 2, (h - resolution) // 2
    img = img.crop((left, top, left + resolution, top + resolution))
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


def _to_nchw_unit(x: np.ndarray, where: Path, channels: int) -> np.ndarray:
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise DatasetError(f"dataset {where}: images must be a numeric array, got dtype {x.dtype}")
    if x.ndim == 3:  # [N, H, W] grayscale
        x = x[:, None]
    if x.ndim != 4:
        raise DatasetError(f"dataset {where}: images must be [N, C, H, W] or [N, H, W, C], got shape {x.shape}")
    if x.shape[1] not in (1, 3) and x.shape[3] in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    if x.shape[1] not in (1, 3):
        raise DatasetError(f"dataset {where}: images must have 1 or 3 channels, got shape {x.shape}")
    if x.shape[1] == 1 and channels == 3:
        x = np.repeat(x, 3, axis=1)
    if np.issubdtype(x.dtype, np.integer):
        if x.size and (x.min() < 0 or x.max() > 255):
            raise DatasetError(f"dataset {where}: integer images must be 0..255")
        return x.astype(np.float32) / 255.0
    out = x.astype(np.float32)
    if not np.all(np.isfinite(out)):
        raise DatasetError(f"dataset {where}: images contain NaN or infinite values")
    return out


def _labels(y: np.ndarray, count: int, where: Path) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:  # one-hot
        y = y.argmax(axis=1)
    y = y.reshape(-1) if y.ndim == 2 else y
    if y.ndim != 1 or len(y) != count:
        raise DatasetError(f"dataset {where}: need one label per image ({count}), got labels of shape {y.shape}")
    whole = np.issubdtype(y.dtype, np.integer) or (
        np.issubdtype(y.dtype, np.floating) and bool(np.all(np.equal(np.mod(y, 1), 0)))
    )
    if not whole:
        raise DatasetError(f"dataset {where}: labels must be integer class indices, got dtype {y.dtype}")
    if y.size and y.min() < 0:
        raise DatasetError(f"dataset {where}: labels must be non-negative class indices")
    return y.astype(np.int64)


def _resize(x: np.ndarray, resolution: int) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        out = F.interpolate(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), size=(resolution, resolution),
                            mode="bilinear", align_corners=False)
    return out.numpy()


# --------------------------------------------------------------------------- bundled digits


def digits_dataset(
    split: str = "train",
    resolution: int = 32,
    seed: int = 0,
    normalize: Normalization = "digits",
    *,
    distorted: bool = False,
    copies: int = 1,
) -> ArrayDataset:
    """scikit-learn's handwritten digits, upsampled to ``resolution`` with 3 channels.

    The split is stratified per class and depends only on ``seed`` (default 0, the one the shipped
    artefacts use): 60 % train, 20 % val, 20 % test, disjoint. Nothing is downloaded: the data
    file ships inside scikit-learn.

    ``distorted`` gives the harder variant the demo supernet is trained and measured on: every image
    of the split appears ``copies`` times, each under its own fixed random affine distortion and
    pixel noise (:func:`distort_digits`). The distortions depend only on ``seed``, the split and the
    copy, so a split is the same array every time; test images are distorted copies of test images
    only, so held-out stays held-out.
    """
    if split not in DIGITS_SPLITS:
        raise DatasetError(f"digits split must be one of {', '.join(DIGITS_SPLITS)}, got {split!r}")
    if resolution < 8:
        raise DatasetError(f"digits resolution must be >= 8 (the images are 8x8), got {resolution}")
    if copies < 1 or (copies > 1 and not distorted):
        raise DatasetError(f"copies must be >= 1 (and only > 1 for distorted digits), got {copies}")
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DatasetError("the digits demo data needs scikit-learn: pip install scikit-learn") from None
    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float32) / 16.0  # [N, 8, 8] in [0, 1]
    labels = np.asarray(bunch.target, dtype=np.int64)
    index = _digits_split_indices(labels, seed)[split]
    x = np.repeat(images[index][:, None], 3, axis=1)
    y = labels[index]
    name = f"sklearn-digits/{split}/seed{seed}"
    if distorted:
        salt = DIGITS_SPLITS.index(split) + 1
        x = np.concatenate([distort_digits(x, seed * 1000 + salt * 100 + c) for c in range(copies)])
        y = np.tile(y, copies)
        name = f"sklearn-digits-distorted/{split}/seed{seed}/x{copies}"
        x = _resize(x, resolution) if resolution != DISTORT_RESOLUTION else x
    else:
        x = _resize(x, resolution) if resolution != 8 else x
    x = apply_normalization(x, normalize, "digits")
    classes = [str(i) for i in range(10)]
    return ArrayDataset(x, y, name=name, classes=classes)


#: resolution the distortions are drawn at (then resized to the model's)
DISTORT_RESOLUTION = 32


def distort_digits(x: np.ndarray, seed: int) -> np.ndarray:
    """8x8 digit images [N, C, 8, 8] in [0, 1] -> [N, C, 32, 32] under per-image random distortions.

    Each image gets a rotation of up to 20 degrees, a scale of 0.8-1.1, a shift of up to 10 % of
    the side, a shear of up to 0.2, and Gaussian pixel noise (sigma 0.15) clipped to [0, 1]: enough
    that a subnet's capacity and input resolution show in its accuracy, where the clean digits let
    every subnet score 95-99 %.
    """
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(int(seed))
    n = x.shape[0]
    with torch.no_grad():
        big = F.interpolate(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
                            size=(DISTORT_RESOLUTION, DISTORT_RESOLUTION), mode="bilinear", align_corners=False)
        angle = (torch.rand(n, generator=gen) * 2 - 1) * (20 * np.pi / 180)
        scale = 0.8 + 0.3 * torch.rand(n, generator=gen)
        shear = (torch.rand(n, generator=gen) * 2 - 1) * 0.2
        shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * 0.2  # grid units: 2 = the whole side
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([
            torch.stack([cos, -sin + shear, shift[:, 0]], 1),
            torch.stack([sin, cos, shift[:, 1]], 1),
        ], 1)
        grid = F.affine_grid(theta, list(big.shape), align_corners=False)
        out = F.grid_sample(big, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        noise = torch.randn(n, 1, DISTORT_RESOLUTION, DISTORT_RESOLUTION, generator=gen) * 0.15
        out = (out + noise).clamp(0.0, 1.0)
    return out.numpy().astype(np.float32)


def _digits_split_indices(labels: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in DIGITS_SPLITS}
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_train = int(round(DIGITS_FRACTIONS[0] * len(members)))
        n_val = int(round(DIGITS_FRACTIONS[1] * len(members)))
        parts["train"].append(members[:n_train])
        parts["val"].append(members[n_train : n_train + n_val])
        parts["test"].append(members[n_train + n_val :])
    return {name: np.sort(np.concatenate(chunks)) for name, chunks in parts.items()}
