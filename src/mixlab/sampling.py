"""Random draws for mixing: mixing ratios (lam) and pairings.

All functions take an explicit `torch.Generator` (or use the default one of the
device) and return tensors on `device`, so a seeded generator reproduces a batch
and nothing here synchronises with the host.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor


def _rng_device(generator: torch.Generator | None, device: torch.device) -> torch.device:
    """Draw on the generator's device (a CPU generator may drive a GPU batch)."""
    return generator.device if generator is not None else torch.device(device)


def beta(
    a: float,
    b: float,
    n: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Draw `n` samples of Beta(a, b) as a float32 tensor (n,) on `device`.

    `torch.distributions.Beta` cannot take a generator; a Dirichlet over two
    categories is the same distribution and its sampler can.
    """
    device = torch.device(device)
    dev = _rng_device(generator, device)
    if a == 1.0 and b == 1.0:  # Beta(1, 1) is U(0, 1): one op instead of three
        return _on(torch.rand(n, generator=generator, device=dev), device)
    conc = _concentration(float(a), float(b), dev).expand(n, 2)
    return _on(torch._sample_dirichlet(conc, generator=generator)[:, 0], device)


def _on(t: Tensor, device: torch.device) -> Tensor:
    """`t.to(device)`, skipping the dispatch when it is already there."""
    return t if t.device == device else t.to(device)


@functools.lru_cache(maxsize=32)
def _concentration(a: float, b: float, device: torch.device) -> Tensor:
    # Cached: building a small tensor costs as much as the draw itself.
    return torch.tensor([a, b], dtype=torch.float32, device=device)


def uniform(
    n: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """`n` samples of U[0, 1) as float32 (n,) on `device`."""
    device = torch.device(device)
    dev = _rng_device(generator, device)
    return _on(torch.rand(n, generator=generator, device=dev), device)


def sample_lam(
    n: int,
    alpha: float,
    *,
    beta_param: float | None = None,
    keep_dominant: bool = False,
    p: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Mixing ratios lam (n,) ~ Beta(alpha, beta_param or alpha).

    keep_dominant: the fastai rule lam = max(lam, 1 - lam), so each mixed sample
    stays mostly itself. p: each lam is kept with probability p and set to 1
    (no mixing) otherwise.
    """
    lam = beta(
        alpha, alpha if beta_param is None else beta_param, n, generator=generator, device=device
    )
    if keep_dominant:
        lam = torch.maximum(lam, 1.0 - lam)
    if p < 1.0:
        keep = uniform(n, generator=generator, device=device) < p
        lam = torch.where(keep, lam, torch.ones_like(lam))
    return lam


def cyclic_permutation(
    batch: int, *, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
) -> Tensor:
    """A random permutation (B,) that is one B-cycle: no sample is paired with itself.

    A plain `randperm` leaves fixed points (a sample "mixed" with itself, which is
    silently unmixed); walking a random order as a single cycle avoids them while
    keeping every partner equally likely.
    """
    device = torch.device(device)
    dev = _rng_device(generator, device)
    order = torch.randperm(batch, generator=generator, device=dev)
    return _on(torch.empty_like(order).scatter_(0, order, order.roll(-1)), device)


def pair_permutation(
    batch: int, *, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
) -> tuple[Tensor, Tensor, Tensor]:
    """A random involution pairing i <-> j, each sample's pair index, and one member per pair.

    Returns `(perm, pair_index, first)`: `perm` (B,) with `perm[perm[i]] == i`;
    `pair_index` (B,) with `pair_index[i] == pair_index[perm[i]]` in [0, B // 2];
    `first` (B // 2,) one member of each pair. With an odd batch, the one sample
    left over is paired with itself and gets pair index B // 2, a slot the caller
    fills with "no mixing".
    """
    dev = _rng_device(generator, torch.device(device))
    order = torch.randperm(batch, generator=generator, device=dev)
    n_pairs = batch // 2
    partner = order.clone()
    partner[0 : 2 * n_pairs : 2] = order[1 : 2 * n_pairs : 2]
    partner[1 : 2 * n_pairs : 2] = order[0 : 2 * n_pairs : 2]
    perm = torch.empty_like(order)
    perm[order] = partner
    slot = torch.arange(batch, device=dev) // 2  # the odd one out lands on slot n_pairs
    pair_index = torch.empty_like(order)
    pair_index[order] = slot
    first = order[0 : 2 * n_pairs : 2]
    return perm.to(device), pair_index.to(device), first.to(device)
