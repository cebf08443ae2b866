"""Fashion-MNIST (70,000 greyscale 28x28 images) from the Debian package `dataset-fashion-mnist`.

Framed as anomaly detection: images of ``normal_classes`` are normal (label 0), the rest are
anomalies (label 1). The default treats every class but *shirt* as normal: shirts look like
T-shirts, pullovers and coats, so a linear detector struggles exactly where a CNN does not.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

from cascade.data.dataset import Dataset
from cascade.data.source import DatasetMissing, DatasetSource

NAME = "fashion-mnist"
DEBIAN_PACKAGE = "dataset-fashion-mnist"
SOURCE_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASS_NAMES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot")
DEFAULT_NORMAL_CLASSES = (0, 1, 2, 3, 4, 5, 7, 8, 9)
_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "t10k": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def source_dir() -> Path:
    return Path(os.environ.get("CASCADE_FASHION_MNIST_DIR", SOURCE_DIR))


def fetch(progress: bool = True) -> Path:
    """Install the Debian package when it is missing (needs root and apt-get)."""
    if (source_dir() / _FILES["train"][0]).is_file():
        return source_dir()
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RuntimeError(f"Fashion-MNIST is missing; install it with: sudo apt-get install -y {DEBIAN_PACKAGE}")
    install = ["apt-get", "install", "-y", "-q", DEBIAN_PACKAGE]
    if subprocess.run(install, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode != 0:
        # a fresh machine may have no package lists yet
        subprocess.run(["apt-get", "update", "-q"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(install, check=True, stdout=subprocess.DEVNULL)
    return source_dir()


def load(normal_classes: tuple[int, ...] | list[int] | None = None) -> Dataset:
    root = source_dir()
    if not (root / _FILES["train"][0]).is_file():
        raise DatasetMissing(NAME, root)
    images, classes = [], []
    for image_file, label_file in _FILES.values():
        images.append(_read_idx(root / image_file).reshape(-1, 28, 28))
        classes.append(_read_idx(root / label_file))
    image_array = np.concatenate(images)
    class_array = np.concatenate(classes).astype(np.int64)
    normal = np.asarray(DEFAULT_NORMAL_CLASSES if normal_classes is None else normal_classes)
    if normal.size == 0 or not np.isin(normal, np.arange(10)).all():
        raise ValueError(f"normal_classes must be a non-empty subset of 0..9, got {normal.tolist()}")
    return Dataset(
        name=NAME,
        y=(~np.isin(class_array, normal)).astype(np.int64),
        label_names=("normal", "anomaly"),
        ids=np.array([f"fashion-mnist/{i}" for i in range(len(class_array))]),
        groups=np.array(CLASS_NAMES)[class_array],
        images=image_array,
    )


def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST container format): magic, dims, then raw uint8 data."""
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


SOURCE = DatasetSource(NAME, "image", ("normal", "anomaly"), "Fashion-MNIST 28x28; shirt = anomaly by default",
                       f"Debian {DEBIAN_PACKAGE}", fetch, load)
