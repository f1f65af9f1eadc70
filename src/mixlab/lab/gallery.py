"""Pictures of mixed training batches: what each method actually feeds the network.

`draw_gallery(dataset, methods, path)` takes a few training samples of the dataset (one per class
where possible), normalises them as the trainer does, mixes them with each method's mixer under a
fixed generator, and draws one row per method: images (grayscale or RGB, denormalised), 1D
signals as line plots, each titled with its ``lam`` and the two labels mixed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["draw_gallery", "mix_samples", "pick_samples"]


def pick_samples(y: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of `n` samples: the first of each class in turn, then the next of each, ...

    Args:
        y: (N,) int64 labels.
    """
    order: list[int] = []
    by_class = [torch.nonzero(y == c).flatten().tolist() for c in torch.unique(y).tolist()]
    depth = 0
    while len(order) < min(n, len(y)):
        for idx in by_class:
            if depth < len(idx) and len(order) < n:
                order.append(idx[depth])
        depth += 1
    return torch.tensor(order, dtype=torch.long)


def _normalise(ds: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x on the 0..1 scale - mean) / std, as the loader does; also mean and std to undo it."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean = torch.tensor(ds.mean, dtype=torch.float32).view(shape)
    std = torch.tensor(ds.std, dtype=torch.float32).view(shape)
    x01 = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    return (x01 - mean) / std, mean, std


def mix_samples(
    x: torch.Tensor, y: torch.Tensor, spec: str, *, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mix a batch with the mixer a method spec names, under a fixed generator.

    Args:
        x: (B, C, *S) float, normalised.
        y: (B,) int64.
        spec: a method spec (``"none"`` leaves the batch as it is).

    Returns:
        ``(x_mixed, y_a, y_b, lam)`` with lam (B,).
    """
    from mixlab.lab.methods import build_mixer

    mixer = build_mixer(spec)
    if mixer is None:
        return x, y, y, torch.ones(len(x))
    g = torch.Generator(device=x.device).manual_seed(seed)
    with torch.no_grad():
        x_mixed, target = mixer(x, y, generator=g)
    lam = torch.as_tensor(target.lam, dtype=torch.float32).expand(len(x))
    return x_mixed, target.y_a, target.y_b, lam


def draw_gallery(
    dataset: str | Any,
    methods: Sequence[str],
    path: str | Path,
    *,
    data_dir: str | Path | None = None,
    n: int = 8,
    seed: int = 0,
) -> Path:
    """Draw one row of `n` mixed training samples per method into a PNG.

    Args:
        dataset: a dataset name for `mixlab.lab.data.load_dataset`, or a loaded `LabDataset`.
        methods: method specs, one row each.
        path: where to write the PNG.
        data_dir: passed to `load_dataset`.
        n: samples per row.
        seed: seed of the mixing generator (the same batch and draws for every rerun).

    Returns:
        `path`. A method whose mixer fails gets a row saying why; the others are still drawn.
    """
    from matplotlib.figure import Figure

    if isinstance(dataset, str):
        from mixlab.lab.data import load_dataset

        dataset = load_dataset(dataset, data_dir)
    idx = pick_samples(dataset.train_y, n)
    x, mean, std = _normalise(dataset, dataset.train_x[idx])
    y = dataset.train_y[idx]
    cols = len(idx)
    spatial = x.ndim - 2
    cell = 1.5 if spatial >= 2 else 2.0
    fig = Figure(figsize=(cell * cols + 1.2, cell * len(methods) + 0.6), layout="constrained")
    grid = fig.add_gridspec(len(methods), cols)
    for row, spec in enumerate(methods):
        axes = [fig.add_subplot(grid[row, c]) for c in range(cols)]
        try:
            xm, ya, yb, lam = mix_samples(x, y, spec, seed=seed)
        except Exception as e:  # one bad method must not hide the others
            for ax in axes:
                ax.set_axis_off()
            axes[0].text(0, 0.5, f"{spec}: {type(e).__name__}: {e}", fontsize=8, va="center")
            continue
        shown = xm.detach().float().cpu() * std + mean
        for c, ax in enumerate(axes):
            _draw_sample(ax, shown[c], spatial)
            a, b, lm = int(ya[c]), int(yb[c]), float(lam[c])
            names = dataset.classes
            title = (
                f"λ={lm:.2f}\n{names[a]}"
                if a == b or lm >= 1
                else f"λ={lm:.2f}\n{names[a]} + {names[b]}"
            )
            ax.set_title(title, fontsize=7)
        axes[0].set_ylabel(spec, fontsize=9, rotation=0, ha="right", va="center")
        if spatial == 1:
            axes[0].tick_params(labelleft=False)
    fig.suptitle(f"{dataset.name}: mixed training samples (generator seed {seed})", fontsize=10)
    path = Path(path)
    fig.savefig(path, dpi=110)
    return path


def _draw_sample(ax: Any, sample: torch.Tensor, spatial: int) -> None:
    """sample: (C, *S) on the data's own scale (0..1 for images)."""
    if spatial == 1:
        for ch in sample:
            ax.plot(ch.numpy(), lw=1.0)
        ax.set_xticks([])
        ax.set_yticks([])
        return
    while sample.ndim > 3:  # volumes: the middle slice
        sample = sample[:, sample.shape[1] // 2]
    img = sample.clamp(0, 1)
    if img.shape[0] >= 3:
        ax.imshow(img[:3].permute(1, 2, 0).numpy(), interpolation="nearest")
    else:
        ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
