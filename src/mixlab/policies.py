"""Policies: mixers that pick among mixers. A policy is itself a mixer."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mixlab.target import MixedTarget


def _check_mixers(mixers: Sequence) -> list:
    mixers = list(mixers)
    if not mixers or not all(callable(m) for m in mixers):
        raise ValueError(f"mixers: expected a non-empty sequence of mixers, got {mixers!r}")
    return mixers


class _Policy:
    def __init__(self, mixers: Sequence) -> None:
        self.mixers = _check_mixers(mixers)
        self.enabled = True

    def choose(self, generator: torch.Generator | None) -> int:
        raise NotImplementedError

    def __call__(
        self,
        x: Tensor,
        y: Tensor,
        *,
        generator: torch.Generator | None = None,
        dense: Tensor | None = None,
    ) -> tuple[Tensor, MixedTarget] | tuple[Tensor, MixedTarget, Tensor]:
        """Mix with the mixer chosen for this call; same signature as `Mixer`."""
        if not self.enabled:
            out = (x, MixedTarget.unmixed(y))
            return (*out, dense) if dense is not None else out
        mixer = self.mixers[self.choose(generator)]
        return mixer(x, y, generator=generator, dense=dense)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.mixers!r})"


class Alternate(_Policy):
    """Switch method on every call, in order: `Alternate([FMix(), MixUp()])` is the
    FMix paper's FMix + MixUp hybrid.

    `state_dict()` / `load_state_dict()` carry the position, so a resumed run
    continues the alternation where it stopped.
    """

    def __init__(self, mixers: Sequence) -> None:
        super().__init__(mixers)
        self.step = 0

    def choose(self, generator: torch.Generator | None) -> int:
        index = self.step % len(self.mixers)
        self.step += 1
        return index

    def state_dict(self) -> dict:
        return {"step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])


class RandomChoice(_Policy):
    """Pick one mixer at random on every call.

    Args:
        mixers: the candidates.
        p: their probabilities (default: equal); normalised.
        seed: seed of the policy's own CPU generator, used when the call's
            generator lives on an accelerator (reading a device draw back to
            choose a Python object would be a host sync). Otherwise the call's
            generator (or torch's default CPU generator) decides, so a seed
            reproduces the batch.
    """

    def __init__(
        self, mixers: Sequence, p: Sequence[float] | None = None, *, seed: int | None = None
    ):
        super().__init__(mixers)
        if p is None:
            p = [1.0] * len(self.mixers)
        p = [float(v) for v in p]
        if len(p) != len(self.mixers) or any(v < 0 for v in p) or sum(p) <= 0:
            raise ValueError(
                f"p: expected {len(self.mixers)} non-negative weights "
                f"with a positive sum, got {p!r}"
            )
        self.p = torch.tensor(p, dtype=torch.float64) / sum(p)
        self._cumulative = self.p.cumsum(0)
        self._own = torch.Generator()
        if seed is None:
            self._own.seed()
        else:
            self._own.manual_seed(seed)

    def choose(self, generator: torch.Generator | None) -> int:
        if generator is None:
            u = torch.rand((), dtype=torch.float64)  # the default CPU generator
        else:
            cpu = generator if generator.device.type == "cpu" else self._own
            u = torch.rand((), generator=cpu, dtype=torch.float64)
        return min(int((self._cumulative <= u).sum()), len(self.mixers) - 1)

    def state_dict(self) -> dict:
        """The policy's own generator state, so a resumed run draws the same choices."""
        return {"generator": self._own.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self._own.set_state(state["generator"])
