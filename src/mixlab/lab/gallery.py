"""Pictures of mixed training batches: what each method actually feeds the network.

`draw_gallery(dataset, methods, path)` takes a few training samples of the dataset (one per class
where possible), normalises them as the trainer does, mixes them with each method's mixer under a
fixed generator, and draws one row per method: images (grayscale or RGB, denormalised), 1D
signals as line plots, each titled with its ``lam`` and the two labels mixed. AutoMix, whose masks
are learned, is shown at several lam with its Mix Block's masks beside the mixed samples, loaded
from the run's checkpoint (`load_automix`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["AUTOMIX_LAMS", "draw_gallery", "load_automix", "mix_samples", "pick_samples"]


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


#: The lam at which `draw_gallery` shows AutoMix's Mix Block.
AUTOMIX_LAMS = (0.2, 0.5, 0.8)


def draw_gallery(
    dataset: str | Any,
    methods: Sequence[str],
    path: str | Path,
    *,
    data_dir: str | Path | None = None,
    n: int = 8,
    seed: int = 0,
    run_dirs: Mapping[str, str | Path] | None = None,
    lams: Sequence[float] = AUTOMIX_LAMS,
) -> Path:
    """Draw one row of `n` mixed training samples per method into a PNG.

    AutoMix gets two rows per lam in `lams`: the samples mixed by its Mix Block, each sample i
    with sample i + 1, and the masks (sample i's weight, 0..1) below them. The Mix Block is the
    trained one of the method's run (rank 0's state in the run's checkpoint), looked up in
    `run_dirs`, else in ``runs/<method-slug>/seed0`` (or the lowest other seed) of the bench
    directory `path` is in; without a checkpoint it is an untrained block, and the figure's title
    says so. Methods that mix inside the network (ManifoldMix) have no mixed input to show and
    get a row saying so.

    Args:
        dataset: a dataset name for `mixlab.lab.data.load_dataset`, or a loaded `LabDataset`.
        methods: method specs, one row each (AutoMix: two per lam).
        path: where to write the PNG.
        data_dir: passed to `load_dataset`.
        n: samples per row.
        seed: seed of the mixing generator (the same batch and draws for every rerun).
        run_dirs: method spec -> the run directory whose ``checkpoint.pt`` holds that method's
            trained state (e.g. seed 0's run of a bench).
        lams: the lam at which to show AutoMix's masks.

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
    kinds = [_kind(spec) for spec in methods]
    heights = [2 * len(lams) if kind == "automix" else 1 for kind in kinds]
    cell = 1.5 if spatial >= 2 else 2.0
    fig = Figure(figsize=(cell * cols + 1.2, cell * sum(heights) + 0.8), layout="constrained")
    grid = fig.add_gridspec(sum(heights), cols)
    ctx = _Rows(fig, grid, cols, spatial, dataset.classes, mean, std)
    notes = []
    row = 0
    for spec, kind, height in zip(methods, kinds, heights, strict=True):
        if kind == "automix":
            where = _find_run_dir(spec, run_dirs, Path(path).parent)
            notes.append(_draw_automix(ctx, row, spec, dataset, x, y, lams, where, seed))
        elif kind == "inside":
            ctx.text(row, f"{spec}: mixes hidden states inside the network, no mixed input to show")
        else:
            _draw_mixer(ctx, row, spec, x, y, seed)
        row += height
    title = f"{dataset.name}: mixed training samples (generator seed {seed})"
    fig.suptitle("\n".join([title, *[note for note in notes if note]]), fontsize=10)
    path = Path(path)
    fig.savefig(path, dpi=110)
    return path


def _kind(spec: str) -> str:
    """The kind of row: "automix", "inside" (other model-aware methods) or "mixer"."""
    from mixlab.lab.methods import METHODS, TrainStep, parse_spec

    try:
        _, terms = parse_spec(spec)
    except ValueError:
        return "mixer"  # its row will show the error
    if len(terms) == 1 and issubclass(METHODS[terms[0].name], TrainStep):
        return "automix" if terms[0].name == "automix" else "inside"
    return "mixer"


class _Rows:
    """Where and how the rows are drawn: the figure, its grid, and the samples' look."""

    def __init__(
        self,
        fig: Any,
        grid: Any,
        cols: int,
        spatial: int,
        classes: Sequence[str],
        mean: torch.Tensor,
        std: torch.Tensor,
    ) -> None:
        self.fig, self.grid, self.cols, self.spatial = fig, grid, cols, spatial
        self.classes, self.mean, self.std = classes, mean, std

    def axes(self, row: int) -> list[Any]:
        return [self.fig.add_subplot(self.grid[row, c]) for c in range(self.cols)]

    def text(self, row: int, message: str) -> None:
        """A message across the whole row (one axes, so no column is widened for it)."""
        ax = self.fig.add_subplot(self.grid[row, :])
        ax.set_axis_off()
        ax.text(0, 0.5, message, fontsize=8, va="center", wrap=True)

    def samples(
        self,
        row: int,
        label: str,
        xm: torch.Tensor,
        ya: torch.Tensor,
        yb: torch.Tensor,
        lam: torch.Tensor,
    ) -> None:
        """A row of mixed samples xm (B, C, *S), normalised, titled with lam (B,) and the labels
        ya, yb (B,)."""
        axes = self.axes(row)
        shown = xm.detach().float().cpu() * self.std + self.mean
        names = self.classes
        for c, ax in enumerate(axes):
            _draw_sample(ax, shown[c], self.spatial)
            a, b, lm = int(ya[c]), int(yb[c]), float(lam[c])
            pair = names[a] if a == b or lm >= 1 else f"{names[a]} + {names[b]}"
            ax.set_title(f"λ={lm:.2f}\n{pair}", fontsize=7)
        self.label(axes[0], label)

    def masks(self, row: int, label: str, mask: torch.Tensor) -> None:
        """A row of masks (B, *S) in [0, 1], titled with their means."""
        axes = self.axes(row)
        for c, ax in enumerate(axes):
            _draw_mask(ax, mask[c].detach().float().cpu())
            ax.set_title(f"mean {float(mask[c].mean()):.2f}", fontsize=7)
        self.label(axes[0], label)

    def label(self, ax: Any, text: str) -> None:
        ax.set_ylabel(text, fontsize=9, rotation=0, ha="right", va="center")
        if self.spatial == 1:
            ax.tick_params(labelleft=False)


def _draw_mixer(
    ctx: _Rows, row: int, spec: str, x: torch.Tensor, y: torch.Tensor, seed: int
) -> None:
    try:
        xm, ya, yb, lam = mix_samples(x, y, spec, seed=seed)
    except Exception as e:  # one bad method must not hide the others
        ctx.text(row, f"{spec}: {type(e).__name__}: {e}")
        return
    ctx.samples(row, spec, xm, ya, yb, lam)


def _draw_automix(
    ctx: _Rows,
    row: int,
    spec: str,
    dataset: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    lams: Sequence[float],
    run_dir: Path | None,
    seed: int,
) -> str:
    """Two rows per lam (mixed samples, masks); returns the line for the figure's title."""
    try:
        automix, where = load_automix(dataset, spec, run_dir, seed=seed)
        perm = torch.arange(len(x)).roll(-1)  # sample i with sample i + 1, at every lam
        label = spec if where.startswith("trained") else f"{spec}\n(untrained)"
        for k, lam in enumerate(lams):
            xm, target, mask = automix.mix(x, y, float(lam), perm=perm)
            ctx.samples(row + 2 * k, f"{label}\nλ={lam:g}", xm, target.y_a, target.y_b, target.lam)
            ctx.masks(row + 2 * k + 1, f"mask λ={lam:g}", mask)
    except Exception as e:  # one bad method must not hide the others
        ctx.text(row, f"{spec}: {type(e).__name__}: {e}")
        return ""
    return f"{spec}: {where}"


def _find_run_dir(
    spec: str, run_dirs: Mapping[str, str | Path] | None, bench_dir: Path
) -> Path | None:
    """The run directory holding `spec`'s checkpoint: from `run_dirs`, else seed 0's (or the
    lowest seed's) run of the bench directory `bench_dir`."""
    from mixlab.lab.bench import method_slug
    from mixlab.lab.checkpoint import CHECKPOINT_NAME

    given = None if run_dirs is None or spec not in run_dirs else Path(run_dirs[spec])
    if given is not None and (given / CHECKPOINT_NAME).is_file():
        return given
    base = bench_dir / "runs" / method_slug(spec)
    seeds = [d for d in base.glob("seed*") if d.name[4:].isdigit()]
    seeds = [d for d in seeds if (d / CHECKPOINT_NAME).is_file()]
    return min(seeds, key=lambda d: int(d.name[4:]), default=given)


def load_automix(
    dataset: Any, spec: str, run_dir: str | Path | None = None, *, seed: int = 0
) -> tuple[Any, str]:
    """The AutoMix of a run, on CPU in eval mode, to draw masks with.

    Args:
        dataset: the loaded `LabDataset` the run trained on.
        spec: the AutoMix method spec (its Mix Block options).
        run_dir: a run directory: q, the EMA model k and the Mix Block are loaded from its
            ``checkpoint.pt`` (rank 0's method state). None, no checkpoint there, or a checkpoint
            of another dataset or method: an untrained AutoMix (weights from `seed`).

    Returns:
        ``(automix, where)``: `mixlab.AutoMix`, and a line that says where its Mix Block comes
        from ("trained: ..." or "untrained Mix Block: ...").
    """
    from mixlab.lab.checkpoint import CHECKPOINT_NAME, load_checkpoint
    from mixlab.lab.methods import build_train_step, format_spec
    from mixlab.lab.models import build_model
    from mixlab.lab.train import DATASET_DEFAULTS

    path = None if run_dir is None else Path(run_dir) / CHECKPOINT_NAME
    state = None if path is None else load_checkpoint(path, map_location="cpu")
    why = f"no checkpoint in {run_dir}" if run_dir is not None else "no run directory found"
    if state is not None:
        cfg = state.get("config") or {}
        if cfg.get("dataset") != dataset.name or cfg.get("method") != format_spec(spec):
            why = f"{path} is a run of {cfg.get('method')!r} on {cfg.get('dataset')!r}"
            state = None
    model_name = state["config"]["model"] if state else DATASET_DEFAULTS[dataset.name]["model"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(
            model_name,
            num_classes=dataset.num_classes,
            in_channels=dataset.in_channels,
            input_size=dataset.input_size,
        )
        step = build_train_step(spec)
        step.setup(model, num_classes=dataset.num_classes, device=torch.device("cpu"))
    if state is not None:
        model.load_state_dict(state["model"])
        step.load_state_dict(state["ranks"][0]["method"])
        where = f"trained Mix Block of {path} ({state['epochs_done']} epoch(s))"
    else:
        where = f"untrained Mix Block ({why})"
    automix = step.automix
    automix.eval()
    return automix, where


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


def _draw_mask(ax: Any, mask: torch.Tensor) -> None:
    """mask: (*S) in [0, 1], the first sample's weight: an image, or a line for 1D signals."""
    while mask.ndim > 2:  # volumes: the middle slice
        mask = mask[mask.shape[0] // 2]
    if mask.ndim == 1:
        ax.plot(mask.numpy(), lw=1.0, color="C3")
        ax.set_ylim(-0.05, 1.05)
    else:
        ax.imshow(mask.numpy(), cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
