"""Method specs: the short strings that name a mixing method in the lab, and what they build.

Grammar (whitespace around tokens is ignored, names are case-insensitive)::

    spec  := "none" | term ("+" term)* | term ("|" term)*
    term  := name [":" key "=" value ("," key "=" value)*]

* ``none`` is the baseline: no mixing, plain cross-entropy on the labels.
* ``a+b`` cycles through the methods batch by batch: ``mixlab.Alternate([a, b])``.
* ``a|b`` picks one method at random for each batch: ``mixlab.RandomChoice([a, b])``.
  ``+`` and ``|`` cannot be combined in one spec.
* Values: ``true``/``false`` -> bool, ``none`` -> None, ``3`` -> int, ``0.5``/``1e-3`` -> float,
  numbers joined by ``-`` -> tuple (``scale=0.1-0.8`` -> ``(0.1, 0.8)``), anything else -> str.
  A negative number is written as such (``-1``); a tuple of negative numbers cannot be written.

Examples: ``mixup``, ``fmix:alpha=1,decay_power=3``, ``resizemix:scale=0.1-0.8``,
``fmix+mixup``, ``mixup:alpha=0.2|cutmix``, ``manifoldmix:alpha=2,layers=0-1-2``,
``automix:alpha=2,feature_module=layer3``. Places inside a network are stage indices of
``model.stages`` (0 is the input) or submodule names, a list joined by ``-`` (`ManifoldMixStep`).

Argument names are checked against the method's ``__init__`` signature, so a typo fails at once
with the list of valid names, not after an hour of training.

Two kinds of method exist. A *batch mixer* is a callable ``mixer(x, y, generator=g) -> (x_mixed,
target)`` that never sees the model (MixUp, CutMix, FMix, ...); the trainer wraps it in a
`MixerStep`. A *model-aware* method (ManifoldMix, AutoMix: they mix inside the network or learn
the mixing) is a subclass of `TrainStep` registered with `register_method`; the trainer then calls
it directly with the model. Both reach the trainer through `build_train_step`.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import mixlab
from mixlab.lab.distributed import broadcast_buffers
from mixlab.methods import MixBlock

__all__ = [
    "BASELINE",
    "COMBINATORS",
    "METHODS",
    "AutoMixStep",
    "BaselineStep",
    "ManifoldMixStep",
    "MixerStep",
    "TermSpec",
    "TrainStep",
    "build_mixer",
    "build_train_step",
    "format_spec",
    "parse_spec",
    "register_method",
]

BASELINE = "none"

#: name -> class. Batch mixers are called as ``cls(**kwargs)``; a `TrainStep` subclass here is a
#: model-aware method. Extend with `register_method`.
METHODS: dict[str, type] = {
    "mixup": mixlab.MixUp,
    "cutmix": mixlab.CutMix,
    "fmix": mixlab.FMix,
    "resizemix": mixlab.ResizeMix,
    "saliencymix": mixlab.SaliencyMix,
}

#: spec operator -> policy class taking a list of mixers.
COMBINATORS: dict[str, type] = {"+": mixlab.Alternate, "|": mixlab.RandomChoice}


# --------------------------------------------------------------------------------------------
# Train steps: how the trainer turns one batch into a loss


class TrainStep:
    """One training batch -> one scalar loss. The extension point for model-aware methods.

    The trainer calls, in order: `setup` once (after the model is built, before the optimizer is
    made), `on_epoch_start` at each epoch, and `loss` for every batch inside the autocast region;
    it then back-propagates the loss, averages the gradients of `parameters` over the ranks when
    data-parallel (the DDP wrapper reduces only the model's), steps the optimizer over the model's
    parameters plus `parameters`, and calls `after_step`. `state_dict`/`load_state_dict` are saved
    in and restored from every checkpoint (one per rank), so a resumed run continues exactly.

    Attributes:
        label_smoothing: set by `build_train_step` from the run config.
        seed: set by `build_train_step`, derived from the run seed and the rank: the seed of a
            method's own generator, if it keeps one (None: not reproducible).
    """

    label_smoothing: float = 0.0
    seed: int | None = None

    def setup(self, model: nn.Module, *, num_classes: int, device: torch.device) -> None:
        """Called once with the bare (not DDP-wrapped, not compiled) model."""

    def parameters(self) -> list[nn.Parameter]:
        """Extra trainable parameters of the method (e.g. a learned mixing block)."""
        return []

    def on_epoch_start(self, epoch: int, num_epochs: int) -> None:
        """Called before each epoch (0-based ``epoch``)."""

    def after_step(self, step: int, total_steps: int) -> None:
        """Called after every optimizer step with the steps done so far (1 after the first) and
        the run's total (epochs x batches per epoch). Runs once per batch: keep it cheap."""

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator) -> Tensor:
        """Scalar training loss for a batch.

        Args:
            model: the model as trained (possibly DDP-wrapped or compiled); call it, do not keep it.
            x: (B, C, *S) float, normalised, augmented, on the training device.
            y: (B,) int64 labels.
            generator: this rank's mixing generator, on the training device.
        """
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} has no state, got keys {sorted(state)}")


class BaselineStep(TrainStep):
    """No mixing: cross-entropy (with optional label smoothing) on the plain labels."""

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator) -> Tensor:
        return F.cross_entropy(model(x), y, label_smoothing=self.label_smoothing)


class MixerStep(TrainStep):
    """A batch mixer: ``x_mixed, target = mixer(x, y)``, then `mixlab.mixed_cross_entropy`.

    Args:
        mixer: callable ``mixer(x, y, generator=g) -> (x_mixed, MixedTarget)``. If it has
            ``state_dict``/``load_state_dict`` (e.g. `mixlab.Alternate`'s position in its cycle),
            that state is checkpointed.
    """

    def __init__(self, mixer: Any) -> None:
        self.mixer = mixer

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator) -> Tensor:
        x_mixed, target = self.mixer(x, y, generator=generator)
        return mixlab.mixed_cross_entropy(
            model(x_mixed), target, label_smoothing=self.label_smoothing
        )

    def state_dict(self) -> dict[str, Any]:
        fn = getattr(self.mixer, "state_dict", None)
        state: dict[str, Any] = {"mixer": fn()} if callable(fn) else {}
        gens = _generators(self.mixer)
        if gens:  # e.g. RandomChoice's own CPU generator (used when mixing on CUDA)
            state["generators"] = [g.get_state() for g in gens]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "mixer" in state:
            self.mixer.load_state_dict(state["mixer"])
        gens = _generators(self.mixer)
        saved = state.get("generators", [])
        if len(saved) != len(gens):
            raise ValueError(f"mixer state has {len(saved)} generator(s), the mixer {len(gens)}")
        for g, s in zip(gens, saved, strict=True):
            g.set_state(s.cpu())


def _generators(obj: Any, depth: int = 0) -> list[torch.Generator]:
    """The torch.Generators a mixer (or a policy, recursively through its mixers) keeps."""
    found: list[torch.Generator] = []
    if depth > 4 or not hasattr(obj, "__dict__"):
        return found
    for value in vars(obj).values():
        if isinstance(value, torch.Generator):
            found.append(value)
        elif isinstance(value, (list, tuple)):
            for item in value:
                found += _generators(item, depth + 1)
    return found


# --------------------------------------------------------------------------------------------
# Model-aware methods: ManifoldMix and AutoMix
#
# Both name places inside the network. A lab model lists its stages in ``model.stages``; a spec
# names a place by stage index (``0`` is the input, ``k`` the k-th stage's output) or by submodule
# name (``input`` is the input), so ``manifoldmix:layers=0-1-2`` means the same thing on every
# model. A list is written with ``-`` between items, as numeric tuples are.

INPUT_NAMES = ("", "input")


def _stages(model: nn.Module) -> tuple[str, ...]:
    return tuple(getattr(model, "stages", None) or ())


def _place_tokens(value: Any, argname: str) -> tuple[str | int, ...] | None:
    """A spec value naming places in a network -> a tuple of stage indices and names.

    ``None`` -> None (the method's default); ``2`` -> ``(2,)``; ``"input-layer1"`` ->
    ``("", "layer1")``; ``(0, 1)`` -> ``(0, 1)``. Digits are indices, ``input`` is the input.
    """
    if value is None:
        return None
    if isinstance(value, str):
        items: list[Any] = value.split("-")
    elif isinstance(value, (int, list, tuple)) and not isinstance(value, bool):
        items = list(value) if isinstance(value, (list, tuple)) else [value]
    else:
        raise ValueError(f"{argname}: expected stage indices or names like 0-1-2, got {value!r}")
    out: list[str | int] = []
    for item in items:
        if isinstance(item, str) and item.strip().isdigit():
            item = int(item)
        if isinstance(item, str):
            item = item.strip()
            if not item and len(items) > 1:
                raise ValueError(f"{argname}: empty place in {value!r}")
            out.append("" if item.lower() in INPUT_NAMES else item)
        elif isinstance(item, int) and not isinstance(item, bool) and item >= 0:
            out.append(item)
        else:
            raise ValueError(
                f"{argname}: expected stage indices >= 0 or submodule names, got {value!r}"
            )
    if not out:
        raise ValueError(f"{argname}: expected at least one place, got {value!r}")
    return tuple(out)


def _resolve_place(model: nn.Module, token: str | int, argname: str) -> str:
    """A stage index (0 = the input) or a name -> the submodule name ("" for the input)."""
    if isinstance(token, str):
        return token
    stages = _stages(model)
    if token == 0:
        return ""
    if token > len(stages):
        raise ValueError(
            f"{argname}: stage {token} requested, but {type(model).__name__} has "
            f"{len(stages)} stage(s) {stages}; 0 is the input, 1..{len(stages)} the stages"
        )
    return stages[token - 1]


def _has_spatial_map(module: nn.Module) -> bool:
    """Whether a stage outputs a feature map (B, C', *S'): the lab's spatial stages convolve;
    the MLP's stages (Linear only) output flat hidden states (B, F)."""
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in module.modules())


class ManifoldMixStep(TrainStep):
    """ManifoldMix (`mixlab.ManifoldMix`) as a training step: mix hidden states at a layer drawn
    per batch, then mixed cross-entropy on the logits.

    Spec: ``manifoldmix:alpha=2,layers=0-1-2`` (or ``layers=input-layer1-layer2``).

    Args:
        alpha: lam ~ Beta(alpha, alpha).
        layers: where to mix, one drawn uniformly per batch: stage indices (0 is the input, k the
            k-th of ``model.stages``) or submodule names (``input`` is the input), joined by
            ``-`` in a spec. Default: the input and the first two stages, never the last stage
            when there are more than one: ``0-1-2`` on a network of 3 or more stages (the paper's
            {input, layer1, layer2} on ResNets), ``0-1`` on two stages, ``0`` on one. Works on
            flat stages (the MLP's hidden states) as well as on feature maps.
        mode, p, keep_dominant: as for `mixlab.ManifoldMix`.

    The layer is drawn from the trainer's mixing generator on CPU and from ManifoldMix's own
    generator (seeded with `seed`, checkpointed) on an accelerator. With ``compile=True`` the
    step runs the model uncompiled: a compiled graph ignores the mixing hook.
    """

    def __init__(
        self,
        alpha: float = 2.0,
        layers: Any = None,
        mode: str = "batch",
        p: float = 1.0,
        keep_dominant: bool = False,
    ) -> None:
        mixlab.MixUp(alpha, mode=mode, p=p, keep_dominant=keep_dominant)  # checks, before a run
        self.alpha, self.mode, self.p, self.keep_dominant = alpha, mode, p, keep_dominant
        self.layer_tokens = _place_tokens(layers, "layers")
        self.mm: mixlab.ManifoldMix | None = None

    @staticmethod
    def default_layers(model: nn.Module) -> tuple[str, ...]:
        """The input and the first two stages, leaving out the last stage of a deeper model."""
        stages = _stages(model)
        return ("", *stages[: min(2, max(len(stages) - 1, 0))])

    def resolve_layers(self, model: nn.Module) -> tuple[str, ...]:
        """The submodule names ("" for the input) the spec's layers stand for on `model`."""
        if self.layer_tokens is None:
            return self.default_layers(model)
        return tuple(_resolve_place(model, t, "layers") for t in self.layer_tokens)

    def setup(self, model: nn.Module, *, num_classes: int, device: torch.device) -> None:
        self.mm = mixlab.ManifoldMix(
            model,
            self.resolve_layers(model),
            self.alpha,
            mode=self.mode,
            p=self.p,
            keep_dominant=self.keep_dominant,
            seed=self.seed,
        )

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator) -> Tensor:
        # A compiled model ignores hooks added to its submodules after compilation (its graph
        # is reused unmixed): mix through the module it wraps, run eagerly.
        runner = getattr(model, "_orig_mod", model)
        logits, target = self._mm(x, y, generator=generator, runner=runner)
        return mixlab.mixed_cross_entropy(logits, target, label_smoothing=self.label_smoothing)

    @property
    def _mm(self) -> mixlab.ManifoldMix:
        if self.mm is None:
            raise RuntimeError("ManifoldMixStep: call setup(model, ...) first")
        return self.mm

    def state_dict(self) -> dict[str, Any]:
        # The layer generator only: the model is the trainer's to save.
        return {} if self.mm is None else {"generator": self.mm.get_extra_state()["generator"]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._mm.set_extra_state({"generator": state["generator"]})


class AutoMixStep(TrainStep):
    """AutoMix (`mixlab.AutoMix`) as a training step: the Mix Block learns the masks from the
    EMA model's feature maps; the trainer's model is q, what is evaluated and saved.

    Spec: ``automix:alpha=2,feature_module=layer3`` (or ``feature_module=3``, the third stage).

    Args:
        alpha: lam ~ Beta(alpha, alpha); the paper's 2.
        feature_module: the stage (index, 1-based) or submodule name whose output feeds the Mix
            Block. Default: the third stage of a network with 3 or more stages (the paper's
            ``layer3``), else the last stage that outputs a feature map. A model whose stages are
            flat (the MLP) is refused at setup.
        mode, momentum, lam_margin, lam_loss_weight, clean_weight: as for `mixlab.AutoMix`
            (``lam_loss_weight=0.1-0`` in a spec); label smoothing comes from the run config.
        reduction, upsample: the Mix Block's (`mixlab.methods.MixBlock`).

    The Mix Block's parameters are trained by the run's optimizer (same lr schedule and weight
    decay as the model); under DDP their gradients are averaged over the ranks by the trainer.
    `after_step` advances the EMA model and the schedules; under DDP it also gives every rank
    rank 0's EMA batch-norm statistics (as DDP does for the model's), so ranks stay identical.
    The checkpointed state is the Mix Block, the EMA model and the schedules' position.
    """

    def __init__(
        self,
        alpha: float = 2.0,
        feature_module: Any = None,
        mode: str = "batch",
        momentum: float = 0.999,
        lam_margin: float = 0.1,
        lam_loss_weight: Any = (0.1, 0.0),
        clean_weight: float = 1.0,
        reduction: int = 2,
        upsample: str = "linear",
    ) -> None:
        if isinstance(lam_loss_weight, (int, float)) and not isinstance(lam_loss_weight, bool):
            lam_loss_weight = (lam_loss_weight, lam_loss_weight)
        if not isinstance(lam_loss_weight, (tuple, list)) or len(lam_loss_weight) != 2:
            raise ValueError(
                f"lam_loss_weight: expected (start, end) like 0.1-0, got {lam_loss_weight!r}"
            )
        tokens = _place_tokens(feature_module, "feature_module")
        if tokens is not None and (len(tokens) != 1 or tokens[0] in ("", 0)):
            raise ValueError(
                f"feature_module: expected one stage (index >= 1) or submodule name, "
                f"got {feature_module!r}"
            )
        self.feature_token = None if tokens is None else tokens[0]
        self.options: dict[str, Any] = dict(
            alpha=alpha,
            mode=mode,
            momentum=momentum,
            lam_margin=lam_margin,
            lam_loss_weight=tuple(lam_loss_weight),
            clean_weight=clean_weight,
        )
        self.block_options: dict[str, Any] = dict(reduction=reduction, upsample=upsample)
        # Every argument is checked now, by the classes that use them, so a bad spec fails before
        # a run starts: a throwaway AutoMix around a one-layer probe network.
        with torch.random.fork_rng(devices=[]):  # their inits must not move the caller's RNG
            probe = nn.Sequential(nn.Conv1d(1, 1, 1))
            block = MixBlock(1, **self.block_options)
            mixlab.AutoMix(probe, "0", mix_block=block, **self.options)
        self.automix: mixlab.AutoMix | None = None

    def resolve_feature_module(self, model: nn.Module) -> str:
        """The submodule name the spec's feature_module stands for on `model`."""
        stages = _stages(model)
        spatial = [s for s in stages if _has_spatial_map(model.get_submodule(s))]
        if self.feature_token is None:
            if not stages:
                raise ValueError(
                    f"automix: {type(model).__name__} names no stages (model.stages); "
                    f"pass feature_module=<submodule name>"
                )
            if not spatial:
                raise ValueError(self._flat_message(model, stages))
            return stages[2] if len(stages) >= 3 and stages[2] in spatial else spatial[-1]
        name = _resolve_place(model, self.feature_token, "feature_module")
        if name in stages and name not in spatial:
            raise ValueError(self._flat_message(model, stages))
        return name

    @staticmethod
    def _flat_message(model: nn.Module, stages: tuple[str, ...]) -> str:
        return (
            f"automix: the stages {stages} of {type(model).__name__} output flat hidden states "
            f"(B, F), not feature maps (B, C', *S'); the Mix Block needs a spatial map to draw "
            f"a mask from: use a convolutional model (cnn8, cnn28, cnn1d, fast_resnet, "
            f"preact_resnet18, wrn28_10)"
        )

    def setup(self, model: nn.Module, *, num_classes: int, device: torch.device) -> None:
        name = self.resolve_feature_module(model)
        automix = mixlab.AutoMix(
            model,
            name,
            num_classes,
            label_smoothing=self.label_smoothing,
            **self.options,
        )
        # The Mix Block's init draws from the trainer's "init" stream, the same on every rank.
        automix.mix_block = MixBlock(automix.mix_block.in_channels, **self.block_options)
        automix.mix_block.to(device)
        self.automix = automix

    @property
    def _automix(self) -> mixlab.AutoMix:
        if self.automix is None:
            raise RuntimeError("AutoMixStep: call setup(model, ...) first")
        return self.automix

    def parameters(self) -> list[nn.Parameter]:
        return [p for p in self._automix.mix_block.parameters() if p.requires_grad]

    def on_epoch_start(self, epoch: int, num_epochs: int) -> None:
        self._automix.train()  # k normalises with batch statistics, as q does

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator) -> Tensor:
        out = self._automix.training_step(x, y, generator=generator, runner=model)
        self.last_parts = out.parts  # detached terms, for a look from outside
        return out.loss

    def after_step(self, step: int, total_steps: int) -> None:
        self._automix.momentum_update(step, total_steps)
        broadcast_buffers(self._automix.ema_model)

    def state_dict(self) -> dict[str, Any]:
        # The model (q) is the trainer's to save; the rest of AutoMix is here.
        if self.automix is None:
            return {}
        return {
            "mix_block": self.automix.mix_block.state_dict(),
            "ema_model": self.automix.ema_model.state_dict(),
            "schedule": self.automix.get_extra_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        automix = self._automix
        automix.mix_block.load_state_dict(state["mix_block"])
        automix.ema_model.load_state_dict(state["ema_model"])
        automix.set_extra_state(state["schedule"])


# --------------------------------------------------------------------------------------------
# Parsing


@dataclass(frozen=True)
class TermSpec:
    """One parsed method term: ``name`` and its keyword arguments."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)


_NUMBER = r"[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?"
_TUPLE = re.compile(rf"^{_NUMBER}(?:-{_NUMBER})+$")
# Split on + or | only where a method name follows, so "1e+3" stays one value.
_SPLIT = re.compile(r"\s*([+|])\s*(?=[A-Za-z_])")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_value(text: str) -> Any:
    """Parse one argument value (see the module docstring for the rules)."""
    t = text.strip()
    low = t.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for conv in (int, float):
        try:
            return conv(t)
        except ValueError:
            pass
    if _TUPLE.match(t):
        return tuple(parse_value(p) for p in t.split("-"))
    return t


def _parse_term(text: str, spec: str) -> TermSpec:
    name, _, args = text.partition(":")
    name = name.strip().lower()
    if not _NAME.match(name):
        raise ValueError(f"method spec {spec!r}: bad method name {name!r}")
    kwargs: dict[str, Any] = {}
    if args.strip():
        for piece in args.split(","):
            key, eq, value = piece.partition("=")
            key = key.strip()
            if not eq or not _NAME.match(key) or not value.strip():
                raise ValueError(
                    f"method spec {spec!r}: expected key=value arguments, got {piece.strip()!r}"
                )
            if key in kwargs:
                raise ValueError(f"method spec {spec!r}: argument {key!r} given twice")
            kwargs[key] = parse_value(value)
    return TermSpec(name, kwargs)


def parse_spec(spec: str) -> tuple[str | None, list[TermSpec]]:
    """Split a spec into its combinator (``"+"``, ``"|"`` or None) and its terms.

    ``"none"`` gives ``(None, [])``. Names and arguments are checked against `METHODS`.

    Raises:
        ValueError: on syntax errors, unknown methods or arguments, or ``+`` mixed with ``|``.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"method spec: expected a non-empty string, got {spec!r}")
    text = spec.strip()
    if text.lower() == BASELINE:
        return None, []
    parts = _SPLIT.split(text)
    terms_text, ops = parts[0::2], set(parts[1::2])
    if len(ops) > 1:
        raise ValueError(f"method spec {spec!r}: cannot combine '+' and '|' in one spec")
    terms = [_parse_term(t, spec) for t in terms_text]
    for t in terms:
        _check_term(t, spec)
    op = ops.pop() if ops else None
    if op is not None and any(issubclass(METHODS[t.name], TrainStep) for t in terms):
        raise ValueError(f"method spec {spec!r}: model-aware methods cannot be combined")
    return op, terms


def _check_term(term: TermSpec, spec: str) -> None:
    if term.name == BASELINE:
        raise ValueError(f"method spec {spec!r}: 'none' cannot be combined with other methods")
    if term.name not in METHODS:
        known = ", ".join([BASELINE, *sorted(METHODS)])
        raise ValueError(f"method spec {spec!r}: unknown method {term.name!r}; known: {known}")
    params = inspect.signature(METHODS[term.name]).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    allowed = [
        n
        for n, p in params.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
    for key in term.kwargs:
        if key not in allowed:
            raise ValueError(
                f"method spec {spec!r}: unknown argument {key!r} for {term.name}; "
                f"known: {', '.join(allowed) or '(none)'}"
            )


def format_spec(spec: str) -> str:
    """The canonical form of a spec: lower-case names, arguments sorted, values normalised.

    ``"FMix: decay_power=3, alpha=1"`` -> ``"fmix:alpha=1,decay_power=3"``.
    """
    op, terms = parse_spec(spec)
    if not terms:
        return BASELINE
    return (op or "").join(_format_term(t) for t in terms)


def _format_term(t: TermSpec) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, tuple):
            return "-".join(fmt(x) for x in v)
        if isinstance(v, bool) or v is None:
            return str(v).lower()
        return str(v)

    args = ",".join(f"{k}={fmt(v)}" for k, v in sorted(t.kwargs.items()))
    return f"{t.name}:{args}" if args else t.name


# --------------------------------------------------------------------------------------------
# Building


def register_method(name: str, cls: type, *, overwrite: bool = False) -> None:
    """Add a method to `METHODS` under ``name``.

    ``cls`` is either a batch mixer class (instances are ``mixer(x, y, generator=g) -> (x_mixed,
    target)``) or a `TrainStep` subclass for a model-aware method; its ``__init__`` keyword
    arguments become the spec's arguments.
    """
    name = name.lower()
    if not _NAME.match(name) or name == BASELINE:
        raise ValueError(f"register_method: invalid method name {name!r}")
    if name in METHODS and not overwrite:
        raise ValueError(f"register_method: {name!r} is already registered ({METHODS[name]})")
    if not isinstance(cls, type):
        raise TypeError(f"register_method: expected a class, got {cls!r}")
    METHODS[name] = cls


def _instantiate(term: TermSpec, spec: str) -> Any:
    try:
        return METHODS[term.name](**term.kwargs)
    except (TypeError, ValueError) as e:
        raise ValueError(f"method spec {spec!r}: {term.name}: {e}") from e


def build_mixer(spec: str, *, seed: int | None = None) -> Any | None:
    """Build the batch mixer a spec names; None for ``"none"``.

    Args:
        spec: see the module docstring.
        seed: seed of `mixlab.RandomChoice`'s own generator (it uses one when the call's
            generator is on an accelerator); None: its default (not reproducible there).

    Returns:
        A callable ``mixer(x, y, generator=g) -> (x_mixed, target)``: one method, or
        ``mixlab.Alternate``/``mixlab.RandomChoice`` over several.

    Raises:
        ValueError: on a bad spec (see `parse_spec`), or if the spec names a model-aware method
            (use `build_train_step` for those).
    """
    op, terms = parse_spec(spec)
    if not terms:
        return None
    for t in terms:
        if issubclass(METHODS[t.name], TrainStep):
            raise ValueError(f"method spec {spec!r}: {t.name} is model-aware; use build_train_step")
    mixers = [_instantiate(t, spec) for t in terms]
    if op is None:
        return mixers[0]
    if op == "|" and seed is not None:
        return COMBINATORS[op](mixers, seed=seed)
    return COMBINATORS[op](mixers)


def build_train_step(
    spec: str, *, label_smoothing: float = 0.0, seed: int | None = None
) -> TrainStep:
    """The `TrainStep` for a spec: `BaselineStep`, `MixerStep`, or a model-aware method.

    ``seed`` goes to `build_mixer`; the trainer derives it from (run seed, rank).
    """
    op, terms = parse_spec(spec)
    if len(terms) == 1 and issubclass(METHODS[terms[0].name], TrainStep):
        step = _instantiate(terms[0], spec)
    else:
        mixer = build_mixer(spec, seed=seed)
        step = BaselineStep() if mixer is None else MixerStep(mixer)
    step.label_smoothing = float(label_smoothing)
    step.seed = seed
    return step


register_method("manifoldmix", ManifoldMixStep)
register_method("automix", AutoMixStep)
