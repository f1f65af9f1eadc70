"""What mixing costs inside a training step (lab speed goal).

    python benchmarks/train_overhead.py [--model cnn28] [--batch 128] [--device cpu]

Times, in one run and interleaved, a plain training step of a small CNN on
(128, 1, 28, 28) batches (forward, cross-entropy, backward, SGD) and the same
step with each method mixing the batch first; also the mixing call alone.
Targets: mixing <= 3% of a step for batch-mode methods, <= 10% for elem-mode FMix.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import mixlab
from mixlab.lab.models import build_model

METHODS = {
    "MixUp batch": (lambda: mixlab.MixUp(), 0.03),
    "CutMix batch": (lambda: mixlab.CutMix(), 0.03),
    "FMix batch": (lambda: mixlab.FMix(), 0.03),
    "FMix+MixUp batch": (lambda: mixlab.Alternate([mixlab.FMix(), mixlab.MixUp()]), 0.03),
    "FMix elem": (lambda: mixlab.FMix(mode="elem"), 0.10),
    "MixUp elem": (lambda: mixlab.MixUp(mode="elem"), None),
    "CutMix elem": (lambda: mixlab.CutMix(mode="elem"), None),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cnn28")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--inner", type=int, default=3)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    model = build_model(
        args.model, num_classes=10, in_channels=1, input_size=(args.size, args.size)
    ).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(args.batch, 1, args.size, args.size, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    gen = torch.Generator(device=device).manual_seed(0)

    def step(loss):
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    fns = {"plain step": lambda: step(F.cross_entropy(model(x), y))}
    for name, (make, _) in METHODS.items():
        mixer = make()

        def mixed_step(m=mixer):
            x_mixed, target = m(x, y, generator=gen)
            step(mixlab.mixed_cross_entropy(model(x_mixed), target))

        fns[f"{name} step"] = mixed_step
        fns[f"{name} mixing"] = lambda m=mixer: m(x, y, generator=gen)

    for fn in fns.values():
        fn()
    sync()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(args.repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(args.inner):
                fn()
            sync()
            times[name].append((time.perf_counter() - start) / args.inner * 1e3)
    ms = {k: statistics.median(v) for k, v in times.items()}
    plain = ms["plain step"]
    print(
        f"{args.model} on ({args.batch}, 1, {args.size}, {args.size}), {device}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(f"plain training step: {plain:.2f} ms (median of {args.repeats})\n")
    print("| method | step ms | mixing ms | mixing / plain step | step overhead | target |")
    print("|---|---|---|---|---|---|")
    for name, (_, target) in METHODS.items():
        mix = ms[f"{name} mixing"]
        over = ms[f"{name} step"] / plain - 1
        goal = (
            ""
            if target is None
            else f"<= {target:.0%} " + ("ok" if mix / plain <= target else "MISS")
        )
        print(
            f"| {name} | {ms[f'{name} step']:.2f} | {mix:.3f} | {mix / plain:.1%} | "
            f"{over:+.1%} | {goal} |"
        )
    print(
        "\n'mixing / plain step' is the cost of the mixing call itself; 'step overhead' "
        "compares whole steps and carries the machine's noise (+-2% here)."
    )


if __name__ == "__main__":
    main()
