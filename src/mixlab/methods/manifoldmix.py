"""ManifoldMix (Verma et al., "Manifold Mixup: Better Representations by Interpolating
Hidden States").

MixUp applied to a hidden state: at each step a layer is picked at random from a
list, the batch's activations there are mixed with a shuffled copy of themselves,
and the forward pass goes on from the mixed state. The mixing happens in a forward
hook that exists only for the duration of the call, so the model is not edited and
a plain `model(x)` outside the call is unmixed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from mixlab._checks import check_labels
from mixlab.methods._hooks import find_module, replace_output
from mixlab.methods.base import MixParams
from mixlab.methods.mixup import MixUp
from mixlab.target import MixedTarget

INPUT = ""


class ManifoldMix(nn.Module):
    """Mix hidden states at a layer drawn at random from `layers`.

    Args:
        model: the classifier; `mm.model` is what to evaluate and save.
        layers: candidate submodule names as `model.named_modules()` spells them
            (e.g. `"layer1"`, `"layer2.0"`); `""` is the input itself (plain
            MixUp). Each step picks one uniformly; repeat a name to weight it. The
            named module's output must be a single tensor (B, ...).
        alpha: lam ~ Beta(alpha, alpha). The paper uses 2.0 on CIFAR.
        mode: "batch" (one lam per batch, as in the paper), "elem" (one per
            sample) or "pair" (one per pair i <-> j); see `Mixer`.
        p, keep_dominant: as for `MixUp`.
        seed: seed of the layer choice's own CPU generator, used when the call's
            generator lives on an accelerator (choosing a hook from a device draw
            would be a host sync). Otherwise the call's generator, or torch's
            default CPU generator, picks the layer, so a seed reproduces the step.

    Call it as `logits, target = mm(x, y)` and pass both to a mixlab loss, e.g.
    `mixlab.mixed_cross_entropy(logits, target)`. `mm.last_layer` names the layer
    the last call mixed at. With `mm.enabled = False` the call is a plain forward
    pass with unmixed targets.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[str] = ("", "layer1", "layer2"),
        alpha: float = 2.0,
        *,
        mode: str = "batch",
        p: float = 1.0,
        keep_dominant: bool = False,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
        if isinstance(layers, str) or not layers:
            raise ValueError(
                f"layers: expected a non-empty list of submodule names, got {layers!r}"
            )
        self.model = model
        self.layers = tuple(layers)
        for name in self.layers:
            if name != INPUT:
                find_module(model, name, argname="layers")
        self.mixup = MixUp(alpha, mode=mode, p=p, keep_dominant=keep_dominant)
        self.alpha = self.mixup.alpha
        self.enabled = True
        self.last_layer: str | None = None
        self._own = torch.Generator()
        if seed is None:
            self._own.seed()
        else:
            self._own.manual_seed(seed)

    def choose_layer(self, generator: torch.Generator | None = None) -> str:
        """Draw the layer to mix at (uniform over `layers`), on the host."""
        if len(self.layers) == 1:
            return self.layers[0]
        if generator is None:
            index = torch.randint(len(self.layers), ())
        else:
            cpu = generator if generator.device.type == "cpu" else self._own
            index = torch.randint(len(self.layers), (), generator=cpu)
        return self.layers[int(index)]

    def forward(
        self,
        x: Tensor,
        y: Tensor,
        *,
        generator: torch.Generator | None = None,
        layer: str | None = None,
        params: MixParams | None = None,
        runner: Callable[[Tensor], Tensor] | None = None,
    ) -> tuple[Tensor, MixedTarget]:
        """A forward pass of `model` with the hidden state at one layer mixed.

        Args:
            x: (B, C, *S) model input.
            y: (B,) int class indices or (B, K) float soft targets.
            generator: randomness for the layer, the pairing and lam.
            layer: mix at this layer instead of drawing one (must be in `layers`).
            params: replay a draw from `mm.mixup.sample(x)` (perm, lam) instead of
                drawing one.
            runner: what to call instead of `model`, e.g. its DDP wrapper; it must
                run `model`'s own submodules, where the hook is.

        Returns:
            `(logits, target)`: the model's output on the mixed pass, and the
            `MixedTarget` (y, y[perm], lam) of the lam used.
        """
        if not isinstance(x, Tensor) or x.ndim < 2:
            raise ValueError(f"x: expected a batch tensor (B, ...), got {_describe(x)}")
        check_labels(y, x.shape[0], x.device)
        if layer is not None and layer not in self.layers:
            raise ValueError(f"layer: expected one of {self.layers}, got {layer!r}")
        run = self.model if runner is None else runner
        if not self.enabled or x.shape[0] < 2:
            self.last_layer = None
            return run(x), MixedTarget.unmixed(y)
        layer = self.choose_layer(generator) if layer is None else layer
        if params is None:
            params = self.mixup.sample(x, generator=generator, spatial_dims=())
        self.last_layer = layer
        target = MixedTarget(y, y.index_select(0, params.perm), params.lam)
        if layer == INPUT:
            return run(self.mixup.apply(x, params)), target
        module = self.model.get_submodule(layer)
        with replace_output(module, lambda h: self.mixup.apply(h, params)):
            logits = run(x)
        return logits, target

    def get_extra_state(self) -> dict:
        return {"generator": self._own.get_state()}

    def set_extra_state(self, state: dict) -> None:
        self._own.set_state(state["generator"].cpu())

    def extra_repr(self) -> str:
        return f"layers={self.layers}, alpha={self.alpha}, mode={self.mixup.mode!r}"


def _describe(x: object) -> str:
    if isinstance(x, Tensor):
        return f"a tensor of shape {tuple(x.shape)}"
    return type(x).__name__
