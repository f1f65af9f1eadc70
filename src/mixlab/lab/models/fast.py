"""A small fast ResNet for quick CIFAR runs, in the spirit of the DAWNBench "ResNet-9" and airbench.

The defaults are David Page's ResNet-9 (conv-BN-ReLU stem of 64 channels, stages of 128, 256 and 512
channels, residual blocks after the first and last), reported to reach 94% on CIFAR-10 in 24 epochs
of a one-cycle schedule (and in about 10 with further tricks). As in airbench, each stage pools
*before* its BN and activation, which then run on a quarter of the pixels. As in both, the head
max-pools and scales the logits down (by 1/8), which damps the large early logits of an
unnormalised linear layer on max-pooled features.
"""

from __future__ import annotations

from torch import Tensor, nn

from .base import PoolHead, StagedNet, init_weights

__all__ = ["FastResNet", "fast_resnet"]

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}


def _act(name: str) -> nn.Module:
    # ReLU in place saves a buffer; it always follows a BN whose output nothing else reads.
    return nn.ReLU(inplace=True) if name == "relu" else _ACTIVATIONS[name]()


def _conv_bn_act(in_ch: int, out_ch: int, act: str) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch), _act(act)
    )


class _Residual(nn.Module):
    """``x + (conv-BN-act, conv-BN-act)(x)``; shape preserving: ``(B, C, H, W) -> (B, C, H, W)``."""

    def __init__(self, channels: int, act: str) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv_bn_act(channels, channels, act), _conv_bn_act(channels, channels, act)
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class FastStage(nn.Module):
    """``conv3x3 -> maxpool 2 -> BN -> act``, then ``res_blocks`` residual blocks.

    Shapes:
        ``(B, in_ch, H, W) -> (B, out_ch, H // 2, W // 2)``.
    """

    def __init__(self, in_ch: int, out_ch: int, res_blocks: int, act: str) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.bn = nn.BatchNorm2d(out_ch)
        self.act = _act(act)
        self.res = nn.Sequential(*[_Residual(out_ch, act) for _ in range(res_blocks)])

    def forward(self, x: Tensor) -> Tensor:
        return self.res(self.act(self.bn(self.pool(self.conv(x)))))


class FastResNet(StagedNet):
    """A ResNet-9-style network: stem, downsampling stages, global max pool, scaled linear head.

    Args:
        num_classes: number of logits.
        in_channels: input channels ``C``.
        stem_width: channels of the conv-BN-act stem (full resolution).
        widths: output channels of each stage; each stage halves the resolution.
        res_blocks: residual blocks at the end of each stage, aligned with ``widths``.
        act: ``"relu"`` (ResNet-9) or ``"gelu"`` (airbench).
        logit_scale: logits are multiplied by this (1/8 in ResNet-9).

    Shapes:
        ``(B, C, H, W) -> (B, num_classes)`` with ``H, W >= 2**len(widths)``; stage ``i`` outputs
        ``(B, widths[i], H // 2**(i+1), W // 2**(i+1))``. The default on 32x32 gives maps of
        ``(128, 16, 16), (256, 8, 8), (512, 4, 4)`` and has ~6.6M parameters.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        stem_width: int = 64,
        widths: tuple[int, ...] = (128, 256, 512),
        res_blocks: tuple[int, ...] = (1, 0, 1),
        act: str = "relu",
        logit_scale: float = 0.125,
    ) -> None:
        if act not in _ACTIVATIONS:
            raise ValueError(f"act must be one of {sorted(_ACTIVATIONS)}, got {act!r}")
        if len(res_blocks) != len(widths):
            raise ValueError(
                f"res_blocks must have one entry per stage ({len(widths)}), got {len(res_blocks)}"
            )
        stem = _conv_bn_act(in_channels, stem_width, act)
        stages: dict[str, nn.Module] = {}
        in_ch = stem_width
        for i, (out_ch, n_res) in enumerate(zip(widths, res_blocks, strict=True)):
            stages[f"layer{i + 1}"] = FastStage(in_ch, out_ch, n_res, act)
            in_ch = out_ch
        # No bias, as in both ResNet-9 and airbench.
        head = PoolHead(in_ch, num_classes, pool="max", bias=False, scale=logit_scale)
        super().__init__(stem, stages, head, tuple(widths))
        self.min_input_size = 2 ** len(widths)
        init_weights(self)


def fast_resnet(num_classes: int, in_channels: int = 3, **kwargs: object) -> FastResNet:
    """The fast CIFAR ResNet (ResNet-9 defaults); ``kwargs`` go to :class:`FastResNet`.

    Stages ``("layer1", "layer2", "layer3")``; e.g. ``widths=(64, 256, 256), res_blocks=(0, 0, 0),
    act="gelu"`` gives an airbench94-like body without its whitening layer.
    """
    return FastResNet(num_classes, in_channels, **kwargs)  # type: ignore[arg-type]
