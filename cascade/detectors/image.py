"""Supervised image detectors on raw pixels: a linear model and a small CNN.

Both take greyscale images as ``(n, height, width)`` arrays of 0..255 intensities (what
``Dataset.images`` holds) or the same images flattened to ``(n, height * width)`` rows. On
Fashion-MNIST with *shirt* as the anomaly the linear detector is the cheap small tier and the CNN,
which sees local shape, the stronger model (served as an expert by :mod:`cascade.experts.image`).

>>> import numpy as np
>>> images = np.random.default_rng(0).integers(0, 256, size=(40, 28, 28), dtype=np.uint8)
>>> y = np.arange(40) % 2
>>> PixelLogistic(C=0.1).fit(images, y).predict_proba(images[:3]).shape
(3, 2)
>>> PixelCNN(epochs=1).fit(images, y).predict_proba(images[:3]).shape
(3, 2)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from math import ceil, isqrt
from pathlib import Path
from typing import TYPE_CHECKING, Self

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cascade.artifact import ArtifactError
from cascade.detectors.base import DetectorBase, Inputs, check_labels, check_rows

if TYPE_CHECKING:
    from cascade.detectors._torch_cnn import ConvNet

WEIGHTS_FILE = "cnn.safetensors"
PREDICT_BATCH = 1024
MAX_INTENSITY = 255.0


class PixelLogistic(DetectorBase):
    """Logistic regression on pixel intensities scaled to [0, 1], optionally standardised first.

    ``C`` is the inverse L2 strength; ``max_iter`` bounds the L-BFGS iterations (and so fit time).

    >>> PixelLogistic(C=0.1, standardize=False)
    PixelLogistic(C=0.1, standardize=False)
    """

    kind = "pixel-lr"
    modality = "image"
    _json_state = ("classes_",)
    _estimator_state = ("pipeline_",)

    def __init__(self, C: float = 0.01, max_iter: int = 300, standardize: bool = True) -> None:
        self.C = C
        self.max_iter = max_iter
        self.standardize = standardize

    def fit(self, X: Inputs, y: np.ndarray | None = None) -> Self:
        """Fit on labelled images (or flattened rows)."""
        if self.C <= 0 or self.max_iter < 1:
            raise ValueError(f"detector '{self.kind}' needs C > 0 and max_iter >= 1")
        pixels = _pixels(X, self.kind)
        labels = check_labels(y, len(pixels), self.kind)
        scaler = [StandardScaler()] if self.standardize else []
        self.pipeline_ = make_pipeline(*scaler, LogisticRegression(C=self.C, max_iter=self.max_iter))
        self.pipeline_.fit(pixels, labels)
        self.classes_ = self.pipeline_.classes_
        return self

    def predict_proba(self, X: Inputs) -> np.ndarray:
        """Class probabilities ``(n, k)``, columns in the order of ``classes_``."""
        self._check_fitted()
        pixels = _pixels(X, self.kind, self.pipeline_.n_features_in_)
        return np.asarray(self.pipeline_.predict_proba(pixels), dtype=np.float64)


class PixelCNN(DetectorBase):
    """A small CNN (two conv blocks with ``channels`` then ``2 * channels`` filters, a head with
    ``hidden_units``) trained with Adam, a cosine-annealed learning rate and cross-entropy; fits
    are deterministic in ``seed``.

    ``num_threads`` sets torch's intra-op threads while fitting and predicting (``None``: torch's
    default). The default 1 is deliberate: on an idle 2-core machine 2 threads fit only ~1.5x
    faster, beside other busy processes they made an epoch ~5x slower, and the thread count changes
    float rounding, so a fixed count keeps fits reproducible.

    The network lives in :mod:`cascade.detectors._torch_cnn`; this class is the training glue.
    Weights are saved as safetensors in ``cnn.safetensors``; the architecture is rebuilt from the
    hyper-parameters and the fitted ``image_shape_`` and ``classes_``.

    >>> PixelCNN(epochs=2, channels=16)
    PixelCNN(channels=16, epochs=2)
    """

    kind = "pixel-cnn"
    modality = "image"
    _json_state = ("classes_", "image_shape_")

    def __init__(self, channels: int = 8, hidden_units: int = 32, epochs: int = 6, batch_size: int = 64,
                 learning_rate: float = 3e-3, seed: int = 0, num_threads: int | None = 1) -> None:
        self.channels = channels
        self.hidden_units = hidden_units
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.seed = seed
        self.num_threads = num_threads

    def fit(self, X: Inputs, y: np.ndarray | None = None) -> Self:
        """Train on labelled images (or square images flattened to rows)."""
        import torch
        from torch.nn.functional import cross_entropy

        sizes = (self.channels, self.hidden_units, self.epochs, self.batch_size, self.num_threads or 1)
        if min(sizes) < 1 or self.learning_rate <= 0:
            raise ValueError(f"detector '{self.kind}' needs channels, hidden_units, epochs, batch_size and "
                             "num_threads >= 1 and learning_rate > 0")
        image_shape = _image_shape(X, self.kind)
        images = torch.from_numpy(_images(X, self.kind, image_shape))
        classes, targets = np.unique(check_labels(y, len(images), self.kind), return_inverse=True)
        target = torch.from_numpy(targets)
        with _torch_threads(self.num_threads), torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            network = self._network(image_shape, len(classes))
            optimiser = torch.optim.Adam(network.parameters(), lr=self.learning_rate)
            steps = self.epochs * ceil(len(images) / self.batch_size)
            schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=steps)
            network.train()
            for _ in range(self.epochs):
                for batch in torch.randperm(len(images)).split(self.batch_size):
                    optimiser.zero_grad()
                    cross_entropy(network(images[batch]), target[batch]).backward()
                    optimiser.step()
                    schedule.step()
        self.network_ = network.eval()
        self.classes_ = classes
        self.image_shape_ = image_shape
        return self

    def predict_proba(self, X: Inputs) -> np.ndarray:
        """Softmax class probabilities ``(n, k)``, computed in batches of ``PREDICT_BATCH`` images."""
        import torch

        self._check_fitted()
        images = torch.from_numpy(_images(X, self.kind, self.image_shape_))
        with _torch_threads(self.num_threads), torch.inference_mode():
            probs = [torch.softmax(self.network_(batch), dim=1) for batch in images.split(PREDICT_BATCH)]
        return torch.cat(probs).numpy().astype(np.float64)

    def _network(self, image_shape: tuple[int, int], n_classes: int) -> ConvNet:
        from cascade.detectors._torch_cnn import ConvNet

        height, width = image_shape
        return ConvNet(self.channels, self.hidden_units, height, width, n_classes)

    def _save_extra(self, directory: Path) -> None:
        from safetensors.torch import save_file

        save_file(self.network_.state_dict(), str(directory / WEIGHTS_FILE))

    def _load_extra(self, directory: Path) -> None:
        from safetensors.torch import load_file

        path = directory / WEIGHTS_FILE
        if not path.is_file():
            raise ArtifactError(f"{path}: missing (expected the CNN weights)")
        height, width = (int(side) for side in self.image_shape_)
        network = self._network((height, width), len(self.classes_))
        try:
            network.load_state_dict(load_file(str(path)))
        except Exception as exc:  # safetensors header errors, or shapes / names that do not fit the network
            raise ArtifactError(f"{path}: corrupt or mismatched CNN weights ({exc})") from exc
        self.network_ = network.eval()
        self.image_shape_ = (height, width)


@contextmanager
def _torch_threads(num_threads: int | None) -> Iterator[None]:
    """Run the block with ``num_threads`` intra-op threads, restoring torch's setting after."""
    import torch

    previous = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _pixels(X: Inputs, kind: str, n_features: int | None = None) -> np.ndarray:
    """Flattened rows of intensities scaled from 0..255 to [0, 1]."""
    return check_rows(X, kind, n_features) / MAX_INTENSITY


def _image_shape(X: Inputs, kind: str) -> tuple[int, int]:
    """``(height, width)`` of 3-D input; flattened rows must be square images."""
    shape = np.shape(X)
    if len(shape) == 3:
        return int(shape[1]), int(shape[2])
    if len(shape) == 2 and isqrt(shape[1]) ** 2 == shape[1]:
        return isqrt(shape[1]), isqrt(shape[1])
    raise ValueError(f"detector '{kind}' takes (n, height, width) images or square images flattened to rows, "
                     f"got shape {shape}")


def _images(X: Inputs, kind: str, image_shape: tuple[int, int]) -> np.ndarray:
    """A float32 ``(n, 1, height, width)`` batch scaled to [0, 1], checked against the fitted shape."""
    height, width = image_shape
    if np.ndim(X) == 3 and tuple(np.shape(X)[1:]) != (height, width):
        raise ValueError(f"detector '{kind}' was fitted on {height}x{width} images, got shape {np.shape(X)}")
    pixels = _pixels(X, kind, height * width)
    return pixels.reshape(len(pixels), 1, height, width).astype(np.float32)
