"""``build_model``: one entry point from a model name and the data's shape to a network."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .base import StagedNet
from .fast import fast_resnet
from .resnet import preact_resnet18, wrn28_10
from .small import cnn1d, cnn8, cnn28, mlp

__all__ = ["MODEL_NAMES", "build_model"]


@dataclass(frozen=True)
class _Spec:
    """How to build one named model and which inputs it takes."""

    factory: Callable[..., StagedNet]
    spatial_dims: int | None  # required len(input_size); None: any (the MLP flattens)
    takes: str  # the inputs it handles, for error messages


_SPECS: dict[str, _Spec] = {
    "preact_resnet18": _Spec(preact_resnet18, 2, "images (B, C, H, W)"),
    "wrn28_10": _Spec(wrn28_10, 2, "images (B, C, H, W)"),
    "fast_resnet": _Spec(fast_resnet, 2, "images (B, C, H, W)"),
    "cnn28": _Spec(cnn28, 2, "images (B, C, H, W), e.g. 28x28"),
    "cnn8": _Spec(cnn8, 2, "images (B, C, H, W), e.g. 8x8"),
    "cnn1d": _Spec(cnn1d, 1, "signals (B, C, L)"),
    "mlp": _Spec(mlp, None, "any (B, C, *S), flattened"),
}

MODEL_NAMES: tuple[str, ...] = tuple(_SPECS)


def build_model(
    name: str,
    num_classes: int,
    in_channels: int = 3,
    input_size: Sequence[int] = (32, 32),
    **kwargs: object,
) -> StagedNet:
    """Build a lab model by name for inputs ``(B, in_channels, *input_size)``.

    Args:
        name: one of :data:`MODEL_NAMES`: ``"preact_resnet18"``, ``"wrn28_10"``, ``"fast_resnet"``,
            ``"cnn28"``, ``"cnn8"`` (images, ``input_size=(H, W)``), ``"cnn1d"`` (signals,
            ``input_size=(L,)``), ``"mlp"`` (any ``input_size``, flattened).
        num_classes: number of logits ``K``.
        in_channels: input channels ``C``.
        input_size: spatial size ``S`` of one input, without the channel dim.
        **kwargs: model options, e.g. ``depth``, ``widen_factor``, ``dropout`` for ``wrn28_10``;
            ``widths``, ``act``, ``logit_scale`` for ``fast_resnet``; ``hidden`` for ``mlp``.

    Returns:
        A :class:`StagedNet`: ``model(x)`` gives ``(B, K)`` logits,
        ``model(x, return_features=True)`` gives ``(logits, {stage: feature})``, and
        ``model.stages`` names the stages in forward order.

    Raises:
        ValueError: for an unknown name (the message lists the known ones), bad sizes, or an
            ``input_size`` whose rank or extent the model cannot handle.
    """
    if name not in _SPECS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}")
    spec = _SPECS[name]
    size = tuple(input_size)
    _check_positive_int("num_classes", num_classes)
    _check_positive_int("in_channels", in_channels)
    if not all(isinstance(s, int) and s >= 1 for s in size):
        raise ValueError(f"input_size must be positive ints, got {input_size!r}")
    if spec.spatial_dims is not None and len(size) != spec.spatial_dims:
        raise ValueError(
            f"model {name!r} takes {spec.takes}, i.e. input_size of {spec.spatial_dims} dim(s), "
            f"got input_size={size}"
        )
    if spec.spatial_dims is None:
        model = spec.factory(num_classes, in_channels * math.prod(size), **kwargs)
    else:
        model = spec.factory(num_classes, in_channels, **kwargs)
    if size and min(size) < model.min_input_size:
        raise ValueError(
            f"model {name!r} pools its input {len(model.stages)} times and needs every spatial "
            f"dim >= {model.min_input_size}, got input_size={size}"
        )
    return model


def _check_positive_int(arg: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{arg} must be a positive int, got {value!r}")
