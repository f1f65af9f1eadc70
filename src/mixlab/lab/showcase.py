"""A picture of what every method does: mixes of real photos, FMix masks at several
decay powers, and FMix in 1D and 3D.

    python -m mixlab.lab.showcase [--out out/showcase.png] [--seed 0]

The photos are scikit-learn's bundled `china.jpg` and `flower.jpg`, so this
needs no data directory.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import mixlab  # noqa: E402

METHODS = {
    "MixUp": mixlab.MixUp(),
    "CutMix": mixlab.CutMix(),
    "FMix": mixlab.FMix(),
    "ResizeMix": mixlab.ResizeMix(),
    "SaliencyMix": mixlab.SaliencyMix(),
}


def sample_photos(size: tuple[int, int] = (192, 288)) -> torch.Tensor:
    """scikit-learn's two sample photos as a float batch (2, 3, H, W) in [0, 1]."""
    from sklearn.datasets import load_sample_images

    images = (
        torch.from_numpy(np.stack(load_sample_images().images)).permute(0, 3, 1, 2).float() / 255
    )
    return F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False)


def _show(ax, image: torch.Tensor, title: str) -> None:
    ax.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy())
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def draw(out: Path, seed: int = 0) -> Path:
    photos = sample_photos()
    labels = torch.tensor([0, 1])
    g = torch.Generator().manual_seed(seed)
    fig = plt.figure(figsize=(16, 10.5), constrained_layout=True)
    grid = fig.add_gridspec(4, 6)

    # Row 1-2: every method, both directions of the pair (elem mode: own lam each).
    for col, (name, mixer) in enumerate(METHODS.items()):
        mixer.mode = "elem"
        mixed, target = mixer(photos, labels, generator=g)
        for row in range(2):
            lam = target.lam[row].item()
            _show(fig.add_subplot(grid[row, col]), mixed[row], f"{name}  lam={lam:.2f}")
    for row in range(2):
        _show(fig.add_subplot(grid[row, 5]), photos[row], ["x_i: china", "x_i: flower"][row])

    # Row 3: FMix masks at decay powers 1, 3, 5 (two each), same lam.
    lam = torch.full((2,), 0.5)
    for i, decay in enumerate((1.0, 3.0, 5.0)):
        masks = mixlab.masks.fourier(
            lam, (96, 96), decay_power=decay, generator=torch.Generator().manual_seed(seed)
        )
        for j in range(2):
            ax = fig.add_subplot(grid[2, 2 * i + j])
            ax.imshow(masks[j].numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"FMix mask, decay_power={decay:g}", fontsize=9)
            ax.axis("off")

    # Row 4: a 1D mask (audio / text) and a 3D mask (voxels).
    ax = fig.add_subplot(grid[3, :3])
    one_d = mixlab.masks.fourier(torch.tensor([0.3, 0.5, 0.7]), (400,), generator=g)
    ax.imshow(one_d.numpy(), aspect="auto", cmap="gray", interpolation="nearest")
    ax.set_yticks(range(3), [f"lam={v}" for v in (0.3, 0.5, 0.7)])
    ax.set_title("1D FMix masks over 400 steps (audio, tokens)", fontsize=9)
    ax = fig.add_subplot(grid[3, 3:], projection="3d")
    voxels = mixlab.masks.fourier(torch.tensor([0.4]), (14, 12, 10), generator=g)[0].bool()
    ax.voxels(voxels.numpy(), facecolors="tab:orange", edgecolor="k", linewidth=0.2)
    ax.set_title("3D FMix mask 14x12x10, lam=0.4", fontsize=9)
    ax.set_axis_off()

    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Gallery of mixlab's methods on real photos.")
    parser.add_argument("--out", type=Path, default=Path("out/showcase.png"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(f"wrote {draw(args.out, args.seed)}")


if __name__ == "__main__":
    main()
