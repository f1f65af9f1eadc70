"""The shared shape of every lab model: a stem, named stages in order, a head.

Mixing methods that work inside the network need a fixed place to reach in. ManifoldMix replaces
the output of a stage chosen at random, and AutoMix reads the output of one named stage; both do it
with a forward hook on the stage module. That works only if each stage is one plain ``nn.Module``
that does all of the stage's work and whose output feeds nothing but the next stage, which is what
:class:`StagedNet` guarantees: ``forward`` is ``stem -> stages[0] -> ... -> stages[-1] -> head``.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["StagedNet", "PoolHead", "init_weights", "count_parameters"]


class StagedNet(nn.Module):
    """A classifier made of a stem, a sequence of named stages and a head.

    The stages are registered as top-level submodules under their names, between ``stem`` and
    ``head``, so ``named_modules()`` lists them in forward order and ``model.get_submodule(name)``
    finds them.

    Args:
        stem: maps the input ``x`` to the first stage's input.
        stages: stage name -> module, in forward order (a dict keeps insertion order).
        head: maps the last stage's output to logits ``(B, num_classes)``.
        stage_channels: channels (or features, for an MLP) of each stage's output, in order.

    Attributes:
        stages: the stage names in forward order, e.g. ``("layer1", "layer2", "layer3", "layer4")``.
        stage_channels: the channel count ``C'`` of each stage's output, aligned with ``stages``.
        min_input_size: the smallest spatial extent (per dim) the network's pooling survives.
    """

    min_input_size: int = 1

    def __init__(
        self,
        stem: nn.Module,
        stages: dict[str, nn.Module],
        head: nn.Module,
        stage_channels: tuple[int, ...],
    ) -> None:
        super().__init__()
        if len(stage_channels) != len(stages):
            raise ValueError(
                f"stage_channels must have one entry per stage ({len(stages)}), "
                f"got {len(stage_channels)}"
            )
        self.stem = stem
        for name, module in stages.items():
            self.add_module(name, module)
        self.head = head
        self.stages: tuple[str, ...] = tuple(stages)
        self.stage_channels: tuple[int, ...] = tuple(stage_channels)

    def forward(
        self, x: Tensor, return_features: bool = False
    ) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        """Classify ``x``.

        Args:
            x: ``(B, C, *S)``, the shape the model was built for (``(B, C, H, W)`` for the 2D
                networks, ``(B, C, L)`` for ``cnn1d``, anything for ``mlp``).
            return_features: also return every stage's output.

        Returns:
            ``logits`` ``(B, num_classes)``, or ``(logits, feats)`` where ``feats`` maps each
            stage name to that stage's output: ``(B, C', *S')`` for convolutional stages,
            ``(B, F)`` for the MLP's hidden blocks. A forward hook that replaces a stage's output
            changes both the feature returned and everything downstream.
        """
        h = self.stem(x)
        feats: dict[str, Tensor] = {}
        # The loop runs over a fixed tuple of names, so torch.compile unrolls it into one graph.
        for name in self.stages:
            h = getattr(self, name)(h)
            if return_features:
                feats[name] = h
        logits = self.head(h)
        if return_features:
            return logits, feats
        return logits


class PoolHead(nn.Module):
    """Optional pre-activation, global pooling over every spatial dim, then a linear classifier.

    Pooling reduces over all spatial dims, so the same head serves ``(B, C, L)`` and
    ``(B, C, H, W)`` inputs of any size.

    Args:
        in_features: channels ``C`` of the input.
        num_classes: number of logits.
        pool: ``"avg"`` (ResNets) or ``"max"`` (the fast ResNet, as in ResNet-9 and airbench).
        pre: a module applied before pooling, e.g. the final BN-ReLU of a pre-activation ResNet.
        bias: whether the linear layer has a bias.
        scale: logits are multiplied by this; a fast ResNet uses 1/8 so that early, large logits do
            not saturate the softmax while BN weights are still settling.

    Shapes:
        ``(B, C, *S) -> (B, num_classes)``.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        pool: str = "avg",
        pre: nn.Module | None = None,
        bias: bool = True,
        scale: float = 1.0,
    ) -> None:
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        self.pre = pre if pre is not None else nn.Identity()
        self.pool = pool
        self.fc = nn.Linear(in_features, num_classes, bias=bias)
        self.scale = float(scale)

    def forward(self, x: Tensor) -> Tensor:
        h = self.pre(x)
        # Reduce over the spatial dims in place of flattening them: a channels_last map would
        # otherwise be copied to contiguous first.
        dims = tuple(range(2, h.ndim))
        h = h.mean(dim=dims) if self.pool == "avg" else h.amax(dim=dims)
        logits = self.fc(h)
        if self.scale != 1.0:
            logits = logits * self.scale
        return logits


def init_weights(model: nn.Module) -> None:
    """Initialise as the papers do: He (kaiming) normal for convs, BN weight 1 and bias 0.

    Convs use ``fan_out`` as in the ResNet and WRN reference code: the gradient scale is then kept
    through the backward pass. Linear layers keep PyTorch's default weight init with a zero bias.
    """
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
