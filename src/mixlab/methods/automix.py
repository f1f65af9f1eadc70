"""AutoMix (Liu et al., "AutoMix: Unveiling the Power of Mixup for Stronger Classifiers").

A small network, the Mix Block, learns the mixing mask from the feature maps of the
pair, and is trained end to end with the classifier through a momentum pipeline:

* k, an EMA copy of the classifier q, supplies the feature maps (at one named
  submodule, found with a forward hook) from which the Mix Block draws two masks
  per step, for two independent (pairing, lam) draws;
* q is trained on the clean batch and on the first mixed batch, whose mask is
  detached (no gradient reaches the Mix Block from q);
* the Mix Block is trained through k's loss on the second mixed batch (k is
  frozen: it changes only by EMA), plus a lam loss that keeps each mask's mean
  within a margin of its lam.

```python
automix = AutoMix(model, feature_module="layer3", num_classes=10, alpha=2.0)
opt = torch.optim.SGD(automix.parameters_to_optimize(), lr=0.1, momentum=0.9)
for step, (x, y) in enumerate(loader):
    loss, parts = automix.training_step(x, y)
    opt.zero_grad(); loss.backward(); opt.step()
    automix.momentum_update(step + 1, total_steps)
logits = automix.model(x_test)     # inference uses q alone
```
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mixlab import sampling
from mixlab._checks import check_alpha, check_labels, check_lam_vector, check_value
from mixlab.losses import mixed_cross_entropy
from mixlab.methods._hooks import capture_output, find_module
from mixlab.target import MixedTarget

_LINEAR_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


class MixBlock(nn.Module):
    """The Mix Block: a lam-conditioned cross-attention from two feature maps to a mask.

    For a pair (z_i, z_j), each (B, C, *S') with 1 to 3 spatial dims:

    1. lam is embedded as one extra channel: z_i gets a channel of lam, z_j of 1 - lam;
    2. a shared 1x1 projection W_P (C + 1 -> C') gives queries from z_i and keys
       from z_j, and P = softmax_rows(q_i^T k_j / sqrt(C')) is their (N x N)
       attention over the N = prod(S') positions;
    3. a 1x1 projection W_Z (C + 1 -> 1) gives values v_i from z_i, and the mask is
       s_i = Upsample(sigmoid(P v_i)) at the input's size.

    The paper writes the attention's normaliser as C; any constant can be folded
    into W_P's scale, and 1 / sqrt(C') (as in the authors' code) keeps the logits'
    size independent of the width, so one init works for any feature map. The
    1x1 convolutions act on the flattened positions, so the block is the same for
    1D, 2D and 3D feature maps. It runs in its parameters' dtype (float32 unless
    converted) with autocast off: attention logits overflow half precision.

    Args:
        in_channels: C, the channels of the feature map.
        reduction: C' = max(C // reduction, 1).
        upsample: "linear" ((bi/tri)linear interpolation, a smooth mask) or
            "nearest" (blocky, one value per feature-map cell).
        init_std: std of the normal init of W_P (default (C + 1) ** -0.5, which
            gives attention logits of order 1, so P is not uniform from the start:
            with a uniform P every position of the mask is the same and the
            gradients that would make it spatial vanish). W_Z's feature weights
            start 10x smaller, so the first masks are nearly flat. Biases start at 0.
        calibrated_init: start W_Z with weight 4 on the lam channel and bias -2,
            so the nearly flat first mask has mean ~= sigmoid(4 lam - 2), within
            0.12 of lam on [0, 1]: the block starts as MixUp and learns spatial
            structure from there. False starts every mask at about 0.5 and
            leaves the lam loss to calibrate it.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        reduction: int = 2,
        upsample: str = "linear",
        init_std: float | None = None,
        calibrated_init: bool = True,
    ) -> None:
        super().__init__()
        if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels: expected a positive int, got {in_channels!r}")
        if isinstance(reduction, bool) or not isinstance(reduction, int) or reduction < 1:
            raise ValueError(f"reduction: expected a positive int, got {reduction!r}")
        if upsample not in ("linear", "nearest"):
            raise ValueError(f"upsample: expected 'linear' or 'nearest', got {upsample!r}")
        self.in_channels = in_channels
        self.embed_channels = max(in_channels // reduction, 1)
        self.upsample = upsample
        self.scale = self.embed_channels**-0.5
        self.proj = nn.Conv1d(in_channels + 1, self.embed_channels, 1)  # W_P, shared by q and k
        self.value = nn.Conv1d(in_channels + 1, 1, 1)  # W_Z
        std = (in_channels + 1) ** -0.5 if init_std is None else init_std
        nn.init.normal_(self.proj.weight, std=std)
        nn.init.normal_(self.value.weight, std=0.1 * std)
        nn.init.zeros_(self.proj.bias)
        nn.init.zeros_(self.value.bias)
        if calibrated_init:
            with torch.no_grad():
                self.value.weight[0, in_channels, 0] = 4.0
                self.value.bias.fill_(-2.0)

    def forward(self, z_i: Tensor, z_j: Tensor, lam: Tensor, size: tuple[int, ...]) -> Tensor:
        """Masks for the pairs (z_i[b], z_j[b]) with ratios lam[b].

        Args:
            z_i: (B, C, *S') feature maps of the samples, 1 <= len(S') <= 3.
            z_j: (B, C, *S') feature maps of their partners.
            lam: (B,) mixing ratios in [0, 1].
            size: S, the input's spatial size, len(S) == len(S').

        Returns:
            (B, *S) float32 mask in [0, 1]: the weight of x_i at each position.
        """
        b, c, *spatial = z_i.shape
        if c != self.in_channels:
            raise ValueError(
                f"z_i: the Mix Block was built for {self.in_channels}-channel feature maps, "
                f"got shape {tuple(z_i.shape)}; pass feature_channels={c}"
            )
        if len(size) != len(spatial):
            raise ValueError(
                f"size: expected {len(spatial)} spatial sizes (the feature map's), got {size}"
            )
        # Attention logits overflow half precision easily: the block runs in its parameters'
        # dtype (float32 unless converted), outside autocast.
        with torch.autocast(z_i.device.type, enabled=False):
            dtype = self.proj.weight.dtype
            zi, zj = z_i.to(dtype).flatten(2), z_j.to(dtype).flatten(2)  # (B, C, N)
            lam_ch = lam.to(dtype).view(b, 1, 1).expand(b, 1, zi.shape[2])
            zi = torch.cat([zi, lam_ch], dim=1)
            zj = torch.cat([zj, 1.0 - lam_ch], dim=1)
            q, k = self.proj(zi), self.proj(zj)  # (B, C', N)
            attn = torch.bmm(q.transpose(1, 2), k).mul_(self.scale).softmax(dim=-1)
            v = self.value(zi).transpose(1, 2)  # (B, N, 1)
            s = torch.sigmoid(torch.bmm(attn, v)).view(b, 1, *spatial)
            mode = _LINEAR_MODES[len(spatial)] if self.upsample == "linear" else "nearest"
            if tuple(spatial) != tuple(size):
                align = False if mode != "nearest" else None
                s = F.interpolate(s, size=tuple(size), mode=mode, align_corners=align)
        return s.squeeze(1)

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, embed_channels={self.embed_channels}, "
            f"upsample={self.upsample!r}"
        )


class AutoMixLoss(NamedTuple):
    """What `AutoMix.training_step` returns: `loss, parts = automix.training_step(x, y)`.

    Attributes:
        loss: the scalar to back-propagate, the sum of the parts (weighted).
        parts: detached scalars: "ce" (q on the clean batch; absent when
            `clean_weight` is 0), "mix_q" (q on its
            mixed batch), "mix_k" (k on the Mix Block's mixed batch), "lam_loss"
            (already weighted by the current lam-loss weight), and "mask_gap",
            the mean |mean(s_i) - lam_i| of the Mix Block's masks (a monitor).
    """

    loss: Tensor
    parts: dict[str, Tensor]


def ema_momentum(step: int, total_steps: int, base: float = 0.999) -> float:
    """The EMA momentum at `step`: `base` at step 0 rising to 1 at `total_steps` on a
    cosine, m = 1 - (1 - base) * (cos(pi * step / total_steps) + 1) / 2."""
    if total_steps < 1:
        raise ValueError(f"total_steps: expected a positive int, got {total_steps!r}")
    t = min(max(step / total_steps, 0.0), 1.0)
    return 1.0 - (1.0 - base) * (math.cos(math.pi * t) + 1.0) / 2.0


class AutoMix(nn.Module):
    """AutoMix with its momentum pipeline, around any classifier with a named feature stage.

    Args:
        model: the classifier q; `automix.model` is what to evaluate and save
            (inference uses q alone, the Mix Block is dropped). Pass the bare
            model, not a DDP wrapper.
        feature_module: the submodule whose output feeds the Mix Block, as
            `model.named_modules()` spells it ("layer3", the third stage of a
            ResNet, as in the paper; "layer2" for a 3-stage network). Its output
            must be one feature map (B, C', *S') with as many spatial dims as the
            input (4D for images, 3D for 1D signals).
        num_classes: K; if given, class-index labels are checked against it.
        alpha: lam ~ Beta(alpha, alpha); the paper uses 2.
        mode: "batch" (one lam per draw, as in the paper) or "elem" (per sample).
        momentum: the EMA momentum at step 0; it rises to 1 on a cosine
            (see `momentum_update`).
        lam_margin: eps of the lam loss, max(|lam - mean(s_i)| - eps, 0).
        lam_loss_weight: (start, end) of the lam loss weight gamma, linear in
            training progress; the paper's (0.1, 0.0).
        clean_weight: weight of CE(q(x), y) on the clean batch (the paper's 1);
            0 skips that forward pass (about a third of the step's compute).
        label_smoothing: passed to `mixed_cross_entropy` for all three terms.
        feature_channels: the feature map's channel count; by default read from a lab
            model's `stage_channels` or from the last conv / norm layer inside
            `feature_module` (checked at the first step).
        mix_block: a ready Mix Block (e.g. with other options); default
            `MixBlock(feature_channels)`.
        stop_early: end k's feature pass at `feature_module` (the layers after it
            are not run). Turn off for a model whose later layers must run.

    Attributes:
        model: q. ema_model: k, a deep copy of q with requires_grad False.
        mix_block: the Mix Block. momentum, lam_loss_weight: the current values.

    Batch norm in k: k runs in the same mode as the AutoMix module, so in training
    it normalises with batch statistics, exactly as q does, and the Mix Block learns
    against the function q computes. Its running statistics are its own, updated
    by its forward passes (the clean batch up to `feature_module`, the mixed batch
    in full), not averaged from q's: `momentum_update` averages parameters only,
    as in the paper's code. k gets no gradient step ever.

    Optimizer: `automix.parameters_to_optimize()` (q and the Mix Block; pass
    `mix_block_lr` for a separate learning rate). `automix.parameters()` also lists
    k's parameters, which never receive gradients.

    `state_dict()` holds q, k, the Mix Block and the schedules' current values, so
    a run resumes exactly; `.to(device)` moves all three networks.
    """

    def __init__(
        self,
        model: nn.Module,
        feature_module: str = "layer3",
        num_classes: int | None = None,
        alpha: float = 2.0,
        *,
        mode: str = "batch",
        momentum: float = 0.999,
        lam_margin: float = 0.1,
        lam_loss_weight: tuple[float, float] = (0.1, 0.0),
        clean_weight: float = 1.0,
        label_smoothing: float = 0.0,
        feature_channels: int | None = None,
        mix_block: MixBlock | None = None,
        stop_early: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
        find_module(model, feature_module, argname="feature_module")
        if mode not in ("batch", "elem"):
            raise ValueError(f"mode: expected 'batch' or 'elem', got {mode!r}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum: expected a value in [0, 1], got {momentum!r}")
        if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
            raise ValueError(f"num_classes: expected a positive int, got {num_classes!r}")
        start, end = (float(v) for v in lam_loss_weight)
        if start < 0 or end < 0 or lam_margin < 0 or clean_weight < 0:
            raise ValueError(
                "lam_loss_weight, lam_margin, clean_weight: expected values >= 0, got "
                f"{lam_loss_weight!r}, {lam_margin!r}, {clean_weight!r}"
            )
        self.model = model
        self.ema_model = copy.deepcopy(model).requires_grad_(False)
        if mix_block is None:
            channels = feature_channels or _guess_channels(model, feature_module)
            mix_block = MixBlock(channels)
        self.mix_block = mix_block
        self.feature_module = feature_module
        self.num_classes = num_classes
        self.alpha = check_alpha(alpha)
        self.mode = mode
        self.base_momentum = float(momentum)
        self.lam_margin = float(lam_margin)
        self.lam_loss_schedule = (start, end)
        self.clean_weight = float(clean_weight)
        self.label_smoothing = float(label_smoothing)
        self.stop_early = bool(stop_early)
        self.momentum = self.base_momentum
        self.lam_loss_weight = start

    # --- inference and optimisation -------------------------------------------------

    def forward(self, x: Tensor) -> Tensor:
        """Inference: q alone, `automix.model(x)`."""
        return self.model(x)

    def parameters_to_optimize(self, mix_block_lr: float | None = None) -> list:
        """What the optimizer should update: q's and the Mix Block's parameters.

        Returns a list of parameters, or with `mix_block_lr` two param groups, the
        second (the Mix Block) with its own learning rate.
        """
        model_params = [p for p in self.model.parameters() if p.requires_grad]
        block_params = [p for p in self.mix_block.parameters() if p.requires_grad]
        if mix_block_lr is None:
            return model_params + block_params
        return [{"params": model_params}, {"params": block_params, "lr": float(mix_block_lr)}]

    @torch.no_grad()
    def momentum_update(self, step: int, total_steps: int) -> float:
        """Advance the schedules to `step` and move k towards q: k <- m k + (1 - m) q.

        Call once per step after `optimizer.step()`, with the number of steps done.
        Sets `momentum` = `ema_momentum(step, total_steps, base)` (from `momentum` at
        step 0 to 1 at the end) and `lam_loss_weight` linearly between its ends.
        Returns the momentum used.
        """
        m = ema_momentum(step, total_steps, self.base_momentum)
        self.momentum = m
        t = min(max(step / total_steps, 0.0), 1.0)
        start, end = self.lam_loss_schedule
        self.lam_loss_weight = start + (end - start) * t
        if m < 1.0:
            k_params = list(self.ema_model.parameters())
            q_params = list(self.model.parameters())
            if len(k_params) != len(q_params):
                raise RuntimeError("model and ema_model no longer have the same parameters")
            torch._foreach_lerp_(k_params, [p.detach() for p in q_params], 1.0 - m)
        return m

    def get_extra_state(self) -> dict:
        return {"momentum": self.momentum, "lam_loss_weight": self.lam_loss_weight}

    def set_extra_state(self, state: dict) -> None:
        self.momentum = float(state["momentum"])
        self.lam_loss_weight = float(state["lam_loss_weight"])

    # --- drawing and masks ----------------------------------------------------------

    def draw(
        self, batch: int, generator: torch.Generator | None, device: torch.device
    ) -> tuple[Tensor, Tensor]:
        """One pairing and lam: `perm` (B,) without self-pairs and `lam` (B,) float32."""
        perm = sampling.cyclic_permutation(batch, generator=generator, device=device)
        n = 1 if self.mode == "batch" else batch
        lam = sampling.sample_lam(n, self.alpha, generator=generator, device=device)
        return perm, lam.expand(batch).contiguous()

    @torch.no_grad()
    def features(self, x: Tensor) -> Tensor:
        """k's feature map at `feature_module` for the batch x: (B, C', *S'), no grad."""
        module = self.ema_model.get_submodule(self.feature_module)
        feats = capture_output(self.ema_model, module, x, stop=self.stop_early)
        if not isinstance(feats, Tensor) or feats.ndim != x.ndim or not 3 <= feats.ndim <= 5:
            got = (
                f"shape {tuple(feats.shape)}" if isinstance(feats, Tensor) else type(feats).__name__
            )
            raise ValueError(
                f"feature_module: {self.feature_module!r} must output a feature map (B, C', *S') "
                f"with the input's {x.ndim - 2} spatial dim(s) (4D for images, 3D for 1D "
                f"signals) for input shape {tuple(x.shape)}; got {got}"
            )
        return feats

    def masks(self, feats: Tensor, perm: Tensor, lam: Tensor, size: tuple[int, ...]) -> Tensor:
        """The Mix Block's masks (B, *S) for pairs (i, perm[i]) with ratios lam (B,)."""
        return self.mix_block(feats, feats.index_select(0, perm), lam, size)

    @staticmethod
    def apply(x: Tensor, perm: Tensor, mask: Tensor) -> Tensor:
        """s * x + (1 - s) * x[perm], the mask (B, *S) broadcast over channels."""
        weight = mask.unsqueeze(1).to(x.dtype)
        return torch.lerp(x.index_select(0, perm), x, weight)

    @torch.no_grad()
    def mix(
        self,
        x: Tensor,
        y: Tensor,
        lam: float | Tensor | None = None,
        *,
        perm: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, MixedTarget, Tensor]:
        """Mix a batch with the current Mix Block (no grad), e.g. for a gallery.

        Call it in eval mode (`automix.eval()`): in training mode k's feature pass
        normalises with the batch's statistics and updates its running ones.

        Args:
            x: (B, C, *S) float batch.
            y: (B,) int labels or (B, K) soft targets.
            lam: a float for the whole batch, a (B,) tensor, or None to draw.
            perm: the pairing (B,), or None to draw one without self-pairs.
            generator: randomness for the draws.

        Returns:
            `(x_mixed, target, mask)`: mask (B, *S) in [0, 1] is x[i]'s weight;
            target.lam is the lam the block was asked for (the label AutoMix
            trains with), not the mask's mean, which the lam loss keeps near it.
        """
        self._check_batch(x, y)
        drawn_perm, drawn_lam = self.draw(x.shape[0], generator, x.device)
        perm = drawn_perm if perm is None else perm.to(x.device)
        if lam is None:
            lam = drawn_lam
        elif isinstance(lam, Tensor):
            lam = check_lam_vector(lam.to(x.device).float())
        else:
            if not 0.0 <= float(lam) <= 1.0:
                raise ValueError(f"lam: expected a value in [0, 1], got {lam!r}")
            lam = torch.full((x.shape[0],), float(lam), device=x.device)
        mask = self.masks(self.features(x), perm, lam, tuple(x.shape[2:]))
        return self.apply(x, perm, mask), MixedTarget(y, y.index_select(0, perm), lam), mask

    # --- training -------------------------------------------------------------------

    def losses(
        self,
        x: Tensor,
        y: Tensor,
        *,
        generator: torch.Generator | None = None,
        runner: Callable[[Tensor], Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """The terms of the AutoMix loss for one batch, still attached to the graph.

        Two independent (pairing, lam) draws are made, k first, then q. Terms:

        - "ce": CE(q(x), y) on the clean batch (absent when `clean_weight` is 0);
        - "mix_q": MCE(q(x_mix_q), y_q), x_mix_q mixed with a mask computed
          without grad: these two reach q only;
        - "mix_k": MCE(k(x_mix_k), y_k), x_mix_k mixed with the Mix Block's mask;
        - "lam_loss": gamma * mean_i max(|lam_i - mean(s_i)| - eps, 0) on that mask,
          gamma = `lam_loss_weight`: these two reach the Mix Block only (k's
          parameters are frozen);
        - "mask_gap": mean_i |mean(s_i) - lam_i|, detached (a monitor).

        Args:
            x: (B, C, *S) float batch, 1 to 3 spatial dims.
            y: (B,) int class indices or (B, K) float soft targets.
            generator: randomness for both draws.
            runner: what to call for q's forward passes instead of `model`, e.g.
                its DDP wrapper (which must run `model` itself).
        """
        self._check_batch(x, y)
        q = self.model if runner is None else runner
        size = tuple(x.shape[2:])
        feats = self.features(x)
        perm_k, lam_k = self.draw(x.shape[0], generator, x.device)
        perm_q, lam_q = self.draw(x.shape[0], generator, x.device)
        mask_k = self.masks(feats, perm_k, lam_k, size)
        with torch.no_grad():
            mask_q = self.masks(feats, perm_q, lam_q, size)
        target_q = MixedTarget(y, y.index_select(0, perm_q), lam_q)
        target_k = MixedTarget(y, y.index_select(0, perm_k), lam_k)
        ls = self.label_smoothing
        terms: dict[str, Tensor] = {}
        if self.clean_weight > 0:
            terms["ce"] = mixed_cross_entropy(q(x), y, label_smoothing=ls)
        x_mix_q = self.apply(x, perm_q, mask_q)
        terms["mix_q"] = mixed_cross_entropy(q(x_mix_q), target_q, label_smoothing=ls)
        x_mix_k = self.apply(x, perm_k, mask_k)
        terms["mix_k"] = mixed_cross_entropy(self.ema_model(x_mix_k), target_k, label_smoothing=ls)
        gap = (mask_k.flatten(1).mean(1) - lam_k.to(mask_k.dtype)).abs()
        terms["lam_loss"] = self.lam_loss_weight * (gap - self.lam_margin).clamp(min=0.0).mean()
        terms["mask_gap"] = gap.detach().mean()
        return terms

    def training_step(
        self,
        x: Tensor,
        y: Tensor,
        *,
        generator: torch.Generator | None = None,
        runner: Callable[[Tensor], Tensor] | None = None,
    ) -> AutoMixLoss:
        """The total AutoMix loss for one batch (arguments as for `losses`):

        loss = clean_weight * ce + mix_q + mix_k + lam_loss.

        Returns:
            `AutoMixLoss(loss, parts)`: back-propagate `loss`; `parts` holds the
            terms of `losses`, detached, for logging.
        """
        terms = self.losses(x, y, generator=generator, runner=runner)
        loss = terms["mix_q"] + terms["mix_k"] + terms["lam_loss"]
        if "ce" in terms:
            loss = loss + self.clean_weight * terms["ce"]
        return AutoMixLoss(loss, {name: v.detach() for name, v in terms.items()})

    def _check_batch(self, x: Tensor, y: Tensor) -> None:
        if not isinstance(x, Tensor) or not 3 <= x.ndim <= 5 or not x.is_floating_point():
            got = f"{x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, Tensor) else x
            raise ValueError(
                f"x: expected a float batch (B, C, *S) with 1 to 3 spatial dims, got {got!r}"
            )
        check_labels(y, x.shape[0], x.device)
        if self.num_classes is not None and not y.is_floating_point():
            check_value(
                y < self.num_classes, f"y: class indices must be < num_classes={self.num_classes}"
            )

    def extra_repr(self) -> str:
        return (
            f"feature_module={self.feature_module!r}, alpha={self.alpha}, mode={self.mode!r}, "
            f"momentum={self.momentum:.6f}, lam_loss_weight={self.lam_loss_weight:.4f}"
        )


def _guess_channels(model: nn.Module, name: str) -> int:
    """The channel count of `name`'s output: a lab model's `stage_channels`, else the
    last conv's out_channels (or norm layer's width) inside the module."""
    stages, channels = getattr(model, "stages", None), getattr(model, "stage_channels", None)
    if stages is not None and channels is not None and name in stages:
        return int(channels[list(stages).index(name)])
    module = model.get_submodule(name)
    convs = [m for m in module.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    if convs:
        return int(convs[-1].out_channels)
    norms = [
        m for m in module.modules() if isinstance(m, (nn.modules.batchnorm._NormBase, nn.GroupNorm))
    ]
    if norms:
        return int(getattr(norms[-1], "num_features", getattr(norms[-1], "num_channels", 0)))
    raise ValueError(
        f"feature_module: cannot tell the channel count of {name!r}'s output; "
        f"pass feature_channels="
    )
