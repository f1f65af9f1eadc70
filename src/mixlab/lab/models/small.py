"""Small networks for small inputs: CNNs for 28x28 and 8x8 images and for 1D signals, and an MLP.

They let the lab run full method comparisons on a CPU (MNIST, Fashion-MNIST, sklearn digits,
MNIST-1D) in minutes, with the same stage interface as the big networks so that feature-level
methods (ManifoldMix, AutoMix) run on them unchanged.
"""

from __future__ import annotations

from torch import nn

from .base import PoolHead, StagedNet, init_weights

__all__ = ["SmallCNN", "MLP", "cnn28", "cnn8", "cnn1d", "mlp"]

_CONV = {1: nn.Conv1d, 2: nn.Conv2d}
_BN = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}
_POOL = {1: nn.MaxPool1d, 2: nn.MaxPool2d}


def _cnn_stage(in_ch: int, out_ch: int, n_convs: int, dims: int, kernel_size: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for j in range(n_convs):
        conv = _CONV[dims](
            in_ch if j == 0 else out_ch, out_ch, kernel_size, padding=kernel_size // 2
        )
        layers += [conv, _BN[dims](out_ch), nn.ReLU(inplace=True)]
    layers.append(_POOL[dims](2))
    return nn.Sequential(*layers)


class SmallCNN(StagedNet):
    """A VGG-style CNN: stages of ``(conv-BN-ReLU) x convs_per_stage -> maxpool 2``, then global
    average pool and a linear layer. Works on 1D signals (``dims=1``) and images (``dims=2``).

    Args:
        num_classes: number of logits.
        in_channels: input channels ``C``.
        widths: channels of each stage; there is one stage per entry.
        convs_per_stage: conv-BN-ReLU layers before each stage's pooling.
        dims: 1 for ``(B, C, L)`` inputs, 2 for ``(B, C, H, W)``.
        kernel_size: odd conv kernel size (same padding).

    Shapes:
        ``(B, C, *S) -> (B, num_classes)`` with every ``S_d >= 2**len(widths)``; stage ``i`` outputs
        ``(B, widths[i], *(S_d // 2**(i+1)))``.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 1,
        widths: tuple[int, ...] = (32, 64, 128),
        convs_per_stage: int = 1,
        dims: int = 2,
        kernel_size: int = 3,
    ) -> None:
        if dims not in _CONV:
            raise ValueError(f"dims must be 1 or 2, got {dims}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
        if convs_per_stage < 1 or not widths:
            raise ValueError(
                f"need convs_per_stage >= 1 and at least one width, got {convs_per_stage} and "
                f"{widths}"
            )
        stages: dict[str, nn.Module] = {}
        in_ch = in_channels
        for i, out_ch in enumerate(widths):
            stages[f"layer{i + 1}"] = _cnn_stage(in_ch, out_ch, convs_per_stage, dims, kernel_size)
            in_ch = out_ch
        # The first stage's conv reads the input directly, so the stem has nothing to do.
        super().__init__(nn.Identity(), stages, PoolHead(in_ch, num_classes), tuple(widths))
        self.min_input_size = 2 ** len(widths)
        init_weights(self)


class MLP(StagedNet):
    """A multilayer perceptron on the flattened input.

    ``stem`` flattens; stage ``layer{i}`` is ``Linear -> BN -> ReLU (-> dropout)`` with
    ``hidden[i]`` features; the head is a linear layer. Unlike the CNNs' stages, which output
    feature maps, these stages output flat hidden states ``(B, hidden[i])``.

    Args:
        num_classes: number of logits.
        in_features: ``C * prod(S)`` of the input ``(B, C, *S)``.
        hidden: width of each hidden block; there is one stage per entry.
        norm: put a BatchNorm1d after each hidden linear layer.
        dropout: dropout at the end of each hidden block; 0 leaves it out.

    Shapes:
        ``(B, *) -> (B, num_classes)`` where the trailing dims multiply to ``in_features``.
    """

    def __init__(
        self,
        num_classes: int,
        in_features: int,
        hidden: tuple[int, ...] = (512, 256),
        norm: bool = True,
        dropout: float = 0.0,
    ) -> None:
        if not hidden:
            raise ValueError("hidden must name at least one hidden width, got ()")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        stages: dict[str, nn.Module] = {}
        in_f = in_features
        for i, out_f in enumerate(hidden):
            block: list[nn.Module] = [nn.Linear(in_f, out_f, bias=not norm)]
            if norm:
                block.append(nn.BatchNorm1d(out_f))
            block.append(nn.ReLU(inplace=True))
            if dropout > 0:
                block.append(nn.Dropout(dropout))
            stages[f"layer{i + 1}"] = nn.Sequential(*block)
            in_f = out_f
        super().__init__(nn.Flatten(1), stages, nn.Linear(in_f, num_classes), tuple(hidden))
        init_weights(self)


def cnn28(num_classes: int, in_channels: int = 1, **kwargs: object) -> SmallCNN:
    """CNN for 28x28 images (MNIST, Fashion-MNIST): stages of 32, 64, 128 channels.

    ``(B, C, 28, 28)`` gives stage maps of 14, 7 and 3 pixels square. ``kwargs`` go to
    :class:`SmallCNN`.
    """
    kwargs = {"widths": (32, 64, 128), "convs_per_stage": 1, **kwargs}
    return SmallCNN(num_classes, in_channels, dims=2, **kwargs)  # type: ignore[arg-type]


def cnn8(num_classes: int, in_channels: int = 1, **kwargs: object) -> SmallCNN:
    """CNN for 8x8 images (sklearn digits): two stages of two convs, 32 and 64 channels.

    ``(B, C, 8, 8)`` gives stage maps of 4 and 2 pixels square.
    """
    kwargs = {"widths": (32, 64), "convs_per_stage": 2, **kwargs}
    return SmallCNN(num_classes, in_channels, dims=2, **kwargs)  # type: ignore[arg-type]


def cnn1d(num_classes: int, in_channels: int = 1, **kwargs: object) -> SmallCNN:
    """1D CNN for signals ``(B, C, L)`` (MNIST-1D, L = 40; audio): three stages of two convs with
    kernel 5 and 32, 64, 128 channels. ``L = 40`` gives stage maps of length 20, 10 and 5.
    """
    kwargs = {"widths": (32, 64, 128), "convs_per_stage": 2, "kernel_size": 5, **kwargs}
    return SmallCNN(num_classes, in_channels, dims=1, **kwargs)  # type: ignore[arg-type]


def mlp(num_classes: int, in_features: int, **kwargs: object) -> MLP:
    """MLP on the flattened input; stages are its hidden blocks with flat outputs ``(B, F)``."""
    return MLP(num_classes, in_features, **kwargs)  # type: ignore[arg-type]
