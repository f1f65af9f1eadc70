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
``fmix+mixup``, ``mixup:alpha=0.2|cutmix``.

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

__all__ = [
    "BASELINE",
    "COMBINATORS",
    "METHODS",
    "BaselineStep",
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
    it then back-propagates the loss and steps the optimizer over the model's parameters plus
    `parameters`. `state_dict`/`load_state_dict` are saved in and restored from every checkpoint,
    so a resumed run continues exactly.

    Attributes:
        label_smoothing: set by `build_train_step` from the run config.
    """

    label_smoothing: float = 0.0

    def setup(self, model: nn.Module, *, num_classes: int, device: torch.device) -> None:
        """Called once with the bare (not DDP-wrapped, not compiled) model."""

    def parameters(self) -> list[nn.Parameter]:
        """Extra trainable parameters of the method (e.g. a learned mixing block)."""
        return []

    def on_epoch_start(self, epoch: int, num_epochs: int) -> None:
        """Called before each epoch (0-based ``epoch``)."""

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
    return step
