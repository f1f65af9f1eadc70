"""Speed of every method and mode, beside two floors measured in the same run.

    python benchmarks/mixing.py [--device cuda] [--repeats 25] [--json out.json]

Floors: `x.clone()` (one read, one write of the batch) and
`torch.lerp(x, x.index_select(0, perm), lam)` (what any pairwise mix must at
least do). Figures are medians of `--repeats` timed calls after warm-up; ratios
are to the lerp floor. The machine is noisy: rerun before trusting a ratio.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import torch

import mixlab

SHAPES = [
    ((128, 3, 32, 32), None),
    ((256, 1, 28, 28), None),
    ((64, 3, 224, 224), None),
    ((64, 300, 128), (1,)),  # token embeddings (B, L, E), masks over L
]
METHODS = {
    "MixUp": mixlab.MixUp,
    "CutMix": mixlab.CutMix,
    "FMix": mixlab.FMix,
    "ResizeMix": mixlab.ResizeMix,
    "SaliencyMix": mixlab.SaliencyMix,
}
MODES = ("batch", "elem", "pair")
# Targets on a 2-core CPU, as ratios to the lerp floor: (method, mode, shape or None=any).
TARGETS = {
    ("MixUp", "batch", None): 1.5,
    ("CutMix", "batch", None): 1.5,
    ("FMix", "batch", None): 2.0,
    ("MixUp", "elem", None): 2.0,
    ("CutMix", "elem", (128, 3, 32, 32)): 3.0,
    ("CutMix", "elem", (64, 3, 224, 224)): 2.0,
    ("FMix", "elem", (128, 3, 32, 32)): 25.0,
    ("FMix", "elem", (64, 3, 224, 224)): 3.0,
}


def target_for(method: str, mode: str, shape: tuple[int, ...]) -> float | None:
    return TARGETS.get((method, mode, shape), TARGETS.get((method, mode, None)))


def timed_round_robin(
    fns: dict, device: torch.device, repeats: int, inner: int = 10
) -> dict[str, float]:
    """Median wall time in ms of each function.

    Each function is timed over `inner` back-to-back calls (the steady state a
    training loop sees, as `timeit` does); these blocks are interleaved across
    functions and repeated, so a load spike on this shared machine hits floors
    and methods alike instead of skewing one ratio."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for fn in fns.values():
        for _ in range(3):
            fn()
    sync()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            sync()
            times[name].append((time.perf_counter() - start) / inner)
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


def shape_cases(shape, spatial_dims, device, methods, modes, generator):
    x = torch.randn(shape, device=device)
    y = torch.randint(0, 10, (shape[0],), device=device)
    perm = torch.randperm(shape[0], device=device)
    lam = torch.rand(shape[0], *[1] * (len(shape) - 1), device=device)
    fns = {
        "clone": lambda: x.clone(),
        "lerp": lambda: torch.lerp(x, x.index_select(0, perm), lam),
    }
    for name in methods:
        for mode in modes:
            mixer = METHODS[name](mode=mode, spatial_dims=spatial_dims)
            fns[(name, mode)] = lambda m=mixer: m(x, y, generator=generator)
    return fns


def run(device: torch.device, repeats: int, methods: list[str], modes: list[str]) -> list[dict]:
    rows = []
    generator = torch.Generator(device=device).manual_seed(0)
    for shape, spatial_dims in SHAPES:
        fns = shape_cases(shape, spatial_dims, device, methods, modes, generator)
        ms = timed_round_robin(fns, device, repeats)
        for key, value in ms.items():
            if key in ("clone", "lerp"):
                continue
            name, mode = key
            row = {
                "shape": list(shape),
                "method": name,
                "mode": mode,
                "ms": value,
                "clone_ms": ms["clone"],
                "lerp_ms": ms["lerp"],
                "x_clone": value / ms["clone"],
                "x_lerp": value / ms["lerp"],
                "target_x_lerp": target_for(name, mode, shape),
            }
            rows.append(row)
            print(_format_row(row), flush=True)
    return rows


def _format_row(r: dict) -> str:
    target = r["target_x_lerp"]
    verdict = "" if target is None else ("ok" if r["x_lerp"] <= target else "MISS")
    goal = f"<= {target:g}x" if target is not None else ""
    shape = "x".join(map(str, r["shape"]))
    return (
        f"| {shape:<14} | {r['method']:<11} | {r['mode']:<5} | {r['ms']:8.3f} | "
        f"{r['clone_ms']:7.3f} | {r['lerp_ms']:7.3f} | {r['x_lerp']:6.2f} | "
        f"{goal:>8} {verdict:<4} |"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        where = f"{platform.machine()}, {torch.get_num_threads()} threads"
    print(f"mixlab {mixlab.__version__}, torch {torch.__version__}, {device} ({where})")
    header = ("shape", "method", "mode", "ms", "clone", "lerp", "x lerp", "target")
    widths = (14, 11, 5, 8, 7, 7, 6, 13)
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    rows = run(device, args.repeats, args.methods.split(","), args.modes.split(","))
    missed = [r for r in rows if r["target_x_lerp"] and r["x_lerp"] > r["target_x_lerp"]]
    print(f"{len(missed)} of {len(rows)} rows missed their target", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"device": str(device), "torch": torch.__version__, "rows": rows}, f, indent=1
            )


if __name__ == "__main__":
    main()
