"""The papers' CIFAR networks: PreAct-ResNet18 and WideResNet-28-10.

MixUp, CutMix, FMix and most of their successors report CIFAR numbers on these two, so the lab
builds them as those papers' code does: PreAct-ResNet18 (He et al., 2016, "Identity Mappings in Deep
Residual Networks") with a 3x3 stem for 32x32 inputs, and WRN-28-10 (Zagoruyko & Komodakis, 2016).
"""

from __future__ import annotations

from torch import Tensor, nn

from .base import PoolHead, StagedNet, init_weights

__all__ = ["PreActBlock", "PreActResNet", "WideResNet", "preact_resnet18", "wrn28_10"]


def _bn_relu(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True))


class PreActBlock(nn.Module):
    """Pre-activation basic block: ``BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3`` plus a shortcut.

    When the shape changes, the shortcut is a 1x1 conv applied to the *pre-activated* input (as in
    the reference code of both papers), so the block's own BN-ReLU is shared by both paths.

    Args:
        in_ch: input channels.
        out_ch: output channels.
        stride: stride of the first conv (and of the shortcut).
        dropout: dropout probability between the two convs (WRN); 0 leaves it out.

    Shapes:
        ``(B, in_ch, H, W) -> (B, out_ch, ceil(H / stride), ceil(W / stride))``.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        # Not in-place: x itself is the identity shortcut and must stay intact.
        a = self.bn1(x).relu()
        skip = x if self.shortcut is None else self.shortcut(a)
        h = self.conv1(a)
        h = self.conv2(self.drop(self.bn2(h).relu()))
        return h + skip


def _stage(in_ch: int, out_ch: int, n_blocks: int, stride: int, dropout: float) -> nn.Sequential:
    blocks = [PreActBlock(in_ch, out_ch, stride, dropout)]
    blocks += [PreActBlock(out_ch, out_ch, 1, dropout) for _ in range(n_blocks - 1)]
    return nn.Sequential(*blocks)


class PreActResNet(StagedNet):
    """Pre-activation ResNet for small images (CIFAR-style 3x3 stem, no max-pool).

    ``stem`` is one 3x3 conv; stage ``layer{i}`` holds ``blocks[i]`` :class:`PreActBlock` s with
    ``width * 2**i`` channels and stride 1 for the first stage, 2 after; the head is the final
    BN-ReLU, global average pool and a linear layer. The stage outputs are pre-activation sums,
    as the architecture defines them.

    Args:
        num_classes: number of logits.
        in_channels: input channels ``C``.
        blocks: blocks per stage; ``(2, 2, 2, 2)`` is ResNet18.
        width: channels of the stem and of the first stage.

    Shapes:
        ``(B, C, H, W) -> (B, num_classes)``; stage ``i`` outputs
        ``(B, width * 2**i, H / 2**i, W / 2**i)`` (rounded up).
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        blocks: tuple[int, ...] = (2, 2, 2, 2),
        width: int = 64,
    ) -> None:
        widths = tuple(width * 2**i for i in range(len(blocks)))
        stem = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        stages: dict[str, nn.Module] = {}
        in_ch = width
        for i, (n, out_ch) in enumerate(zip(blocks, widths, strict=True)):
            stages[f"layer{i + 1}"] = _stage(in_ch, out_ch, n, 1 if i == 0 else 2, 0.0)
            in_ch = out_ch
        head = PoolHead(in_ch, num_classes, pool="avg", pre=_bn_relu(in_ch))
        super().__init__(stem, stages, head, widths)
        init_weights(self)


class WideResNet(StagedNet):
    """WideResNet-``depth``-``widen_factor`` for small images.

    ``stem`` is a 3x3 conv to 16 channels; three stages ``layer1..layer3`` of ``(depth - 4) / 6``
    pre-activation blocks with ``16k, 32k, 64k`` channels (``k = widen_factor``) and strides
    1, 2, 2; the head is BN-ReLU, global average pool and a linear layer.

    Args:
        num_classes: number of logits.
        in_channels: input channels ``C``.
        depth: total depth, ``6n + 4``; 28 gives 4 blocks per stage.
        widen_factor: width multiplier ``k``.
        dropout: dropout between the convs of each block; the mixing papers use 0.

    Shapes:
        ``(B, C, H, W) -> (B, num_classes)``; stage ``i`` outputs
        ``(B, 16k * 2**i, H / 2**i, W / 2**i)`` (rounded up).
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        depth: int = 28,
        widen_factor: int = 10,
        dropout: float = 0.0,
    ) -> None:
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, ...), got {depth}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        n = (depth - 4) // 6
        widths = tuple(16 * widen_factor * 2**i for i in range(3))
        stem = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        stages: dict[str, nn.Module] = {}
        in_ch = 16
        for i, out_ch in enumerate(widths):
            stages[f"layer{i + 1}"] = _stage(in_ch, out_ch, n, 1 if i == 0 else 2, dropout)
            in_ch = out_ch
        head = PoolHead(in_ch, num_classes, pool="avg", pre=_bn_relu(in_ch))
        super().__init__(stem, stages, head, widths)
        init_weights(self)


def preact_resnet18(num_classes: int, in_channels: int = 3, width: int = 64) -> PreActResNet:
    """PreAct-ResNet18 as in the MixUp, CutMix and FMix CIFAR experiments (~11.2M parameters).

    Stages ``("layer1", "layer2", "layer3", "layer4")`` with 64/128/256/512 channels at strides
    1/2/2/2: ``(B, C, 32, 32)`` gives maps of 32, 16, 8 and 4 pixels square.
    """
    return PreActResNet(num_classes, in_channels, blocks=(2, 2, 2, 2), width=width)


def wrn28_10(
    num_classes: int,
    in_channels: int = 3,
    depth: int = 28,
    widen_factor: int = 10,
    dropout: float = 0.0,
) -> WideResNet:
    """WideResNet-28-10 (~36.5M parameters); ``depth``, ``widen_factor``, ``dropout`` configurable.

    Stages ``("layer1", "layer2", "layer3")`` with 160/320/640 channels at strides 1/2/2.
    """
    return WideResNet(num_classes, in_channels, depth, widen_factor, dropout)
