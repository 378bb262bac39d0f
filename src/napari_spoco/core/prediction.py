"""Running the network: from a raw image to its embedding and head maps.

:func:`predict` is what front ends call: it normalises the image, resizes it by
the object scale, runs the network tile by tile (:mod:`.tiling`) and splits its
output into the embedding and the head maps (a :class:`Prediction`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage

from .config import LossConfig
from .image import check_image_size, prepare_image, rescale_spatial
from .model import EmbeddingUNet, split_output
from .tiling import predict_embeddings

__all__ = [
    "Prediction",
    "augment_or_default",
    "embed_at_scale",
    "predict",
    "predict_image",
]


def augment_or_default(augment: bool | None, spatial_dims: int) -> bool:
    """Whether Segment averages the eight orientations (``augment``; None: by the image).

    The one rule the panel, the command line and block-wise prediction share:
    on for 2D images, where eight passes cost seconds and raised the
    generalist's AP@0.5 (docs/benchmarks.md, "Eight orientations"); off for
    volumes, where they cost minutes and were not measured.
    """
    return spatial_dims == 2 if augment is None else augment


def predict_image(
    model: EmbeddingUNet,
    image: npt.ArrayLike,
    *,
    object_scale: float = 1.0,
    channel_axis: int | None = None,
    **tiling: object,
) -> npt.NDArray[np.float32]:
    """Embed a raw image the way the model was trained to see it.

    Normalises ``image``, resizes it by ``object_scale`` (the factor the
    training images were resized by, ``TrainConfig.object_scale``), runs
    :func:`predict_embeddings` and resizes the embeddings back, so that they
    line up with the image the user sees.

    Parameters
    ----------
    model : EmbeddingUNet
        Trained network.
    image : array_like
        Raw (Y, X) or (Z, Y, X) image, or with a channel axis at ``channel_axis``.
    object_scale : float
        Y/X resize factor used in training.
    channel_axis : int, optional
        Axis holding channels, ``None`` for single-channel images.
    **tiling
        ``tile_shape``, ``overlap``, ``batch_size``, ``device``, ``progress``,
        ``augment`` of :func:`predict_embeddings`.

    Returns
    -------
    ndarray of float32, shape (D, *spatial)
        Embeddings at the image's own size.

    Raises
    ------
    ValueError
        If the image is too small for the network after resizing by
        ``object_scale`` (:func:`~napari_spoco.core.image.check_image_size`),
        as for training, or does not fit the model.
    """
    prepared = prepare_image(
        image, spatial_dims=model.config.spatial_dims, channel_axis=channel_axis
    )
    check_image_size(prepared.shape[1:], object_scale)
    return embed_at_scale(model, prepared, object_scale, **tiling)


def embed_at_scale(
    model: EmbeddingUNet, prepared: npt.NDArray[np.float32], object_scale: float, **tiling: object
) -> npt.NDArray[np.float32]:
    """Resize a normalised (C, *spatial) image by ``object_scale``, embed it, resize back.

    The part of :func:`predict_image` that block-wise prediction shares: its
    blocks are normalised with the whole image's percentiles and may be
    smaller than a whole image must be.
    """
    scaled = rescale_spatial(prepared, object_scale, order=1, channel_first=True)
    embeddings = predict_embeddings(model, scaled, **tiling)
    if embeddings.shape[1:] == prepared.shape[1:]:
        return embeddings
    zoom = [1.0] + [
        full / small for full, small in zip(prepared.shape[1:], scaled.shape[1:], strict=True)
    ]
    return ndimage.zoom(embeddings, zoom, order=1, mode="nearest", grid_mode=True)


@dataclass(frozen=True)
class Prediction:
    """What the network says about every pixel.

    Attributes
    ----------
    embeddings : ndarray of float32, shape (D, *spatial)
        Pixel embeddings.
    foreground : ndarray of float32, shape (*spatial), or None
        Foreground probability from the foreground head, if the model has one.
    distance : ndarray of float32, shape (*spatial), or None
        Normalised inner distance from the distance head, if the model has one.
    delta_v, delta_d : float
        Margins the model was trained with.
    """

    embeddings: NDArray[np.float32]
    foreground: NDArray[np.float32] | None = None
    distance: NDArray[np.float32] | None = None
    delta_v: float = LossConfig.delta_v
    delta_d: float = LossConfig.delta_d

    @classmethod
    def from_output(
        cls, output: NDArray[np.float32], model: EmbeddingUNet, loss: LossConfig | None = None
    ) -> Prediction:
        """Split raw network output (C, *spatial) into embedding and head probabilities."""
        embeddings, heads = split_output(output, model.config)
        probabilities = {name: _sigmoid(logits) for name, logits in heads.items()}
        loss = loss or LossConfig()
        return cls(
            embeddings=np.ascontiguousarray(embeddings),
            foreground=probabilities.get("foreground"),
            distance=probabilities.get("distance"),
            delta_v=loss.delta_v,
            delta_d=loss.delta_d,
        )


def _sigmoid(logits: NDArray) -> NDArray[np.float32]:
    return (1.0 / (1.0 + np.exp(-np.clip(logits, -60, 60)))).astype(np.float32)


def predict(
    model: EmbeddingUNet,
    image: ArrayLike,
    *,
    loss: LossConfig | None = None,
    object_scale: float = 1.0,
    channel_axis: int | None = None,
    **tiling: object,
) -> Prediction:
    """Run ``model`` on a raw image and return its embedding and head maps.

    Parameters
    ----------
    model : EmbeddingUNet
        Trained network.
    image : array_like
        Raw (Y, X) or (Z, Y, X) image, or with a channel axis at ``channel_axis``.
    loss : LossConfig, optional
        Loss settings the model was trained with (their margins guide clustering).
    object_scale : float
        Y/X resize factor used in training (``TrainConfig.object_scale``).
    channel_axis : int, optional
        Axis holding channels, ``None`` for single-channel images.
    **tiling
        ``tile_shape``, ``overlap``, ``batch_size``, ``device``, ``progress``,
        ``augment`` of :func:`predict_embeddings`.

    Returns
    -------
    Prediction
        At the image's own spatial size.
    """
    output = predict_image(
        model, image, object_scale=object_scale, channel_axis=channel_axis, **tiling
    )
    return Prediction.from_output(output, model, loss)
