"""Cost of one training step (forward + backward + optimizer) per method, on one model and batch.

    python benchmarks/train_step.py [--device cuda] [--model preact_resnet18] [--repeats 5]

Methods: a plain MixUp step (the floor: one forward and backward of the model), a
ManifoldMix step (mixing at a random one of the input, layer1, layer2), and an AutoMix
step (k's feature pass to `--feature-module`, q on the clean and on a mixed batch, k on
the Mix Block's mixed batch with a backward to its input, the EMA update), plus AutoMix
without the clean-batch term (`clean_weight=0`). Each method trains its own copy of the
model with its own SGD optimizer. The steps are timed round-robin, one of each per
round, so machine noise hits them alike; figures are medians over `--repeats` rounds
after warm-up, and ratios are to MixUp's median in the same run.

Targets: ManifoldMix <= 1.1x MixUp; AutoMix <= 2x MixUp. Counting passes, paper AutoMix
does about 3x MixUp's work (two full forward-backward passes of q, a forward and an
input-only backward of k, and k's partial feature pass), so 2x is reachable only
without the clean term; see the printed figures.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time

import torch

import mixlab
from mixlab.lab.models import build_model
from mixlab.methods.automix import AutoMix
from mixlab.methods.manifoldmix import ManifoldMix

TARGETS = {"ManifoldMix": 1.1, "AutoMix": 2.0}


def make_steps(args, device: torch.device) -> dict:
    torch.manual_seed(0)
    base = build_model(args.model, num_classes=10, in_channels=3, input_size=(args.size,) * 2)
    base = base.to(device).train()
    gen = torch.Generator(device=device).manual_seed(0)
    opt_kwargs = {"lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4}
    steps = {}

    model = copy.deepcopy(base)
    mixup = mixlab.MixUp(alpha=1.0)
    opt = torch.optim.SGD(model.parameters(), **opt_kwargs)

    def mixup_step(x, y, model=model, opt=opt):
        x_mixed, target = mixup(x, y, generator=gen)
        loss = mixlab.mixed_cross_entropy(model(x_mixed), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    steps["MixUp"] = mixup_step

    mm = ManifoldMix(copy.deepcopy(base), layers=["", "layer1", "layer2"], alpha=2.0, seed=0)
    opt_mm = torch.optim.SGD(mm.model.parameters(), **opt_kwargs)

    def manifold_step(x, y, mm=mm, opt=opt_mm):
        logits, target = mm(x, y, generator=gen)
        loss = mixlab.mixed_cross_entropy(logits, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    steps["ManifoldMix"] = manifold_step

    for name, clean_weight in (("AutoMix", 1.0), ("AutoMix (clean_weight=0)", 0.0)):
        am = AutoMix(
            copy.deepcopy(base), args.feature_module, num_classes=10, clean_weight=clean_weight
        ).to(device)
        opt_am = torch.optim.SGD(am.parameters_to_optimize(), **opt_kwargs)
        counter = {"step": 0}

        def automix_step(x, y, am=am, opt=opt_am, counter=counter):
            loss, _ = am.training_step(x, y, generator=gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            counter["step"] += 1
            am.momentum_update(counter["step"], 10_000)

        steps[name] = automix_step
    return steps


def run(args) -> list[dict]:
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    steps = make_steps(args, device)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    for fn in steps.values():
        for _ in range(args.warmup):
            fn(x, y)
    sync()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name, fn in steps.items():
            sync()
            start = time.perf_counter()
            fn(x, y)
            sync()
            times[name].append((time.perf_counter() - start) * 1e3)
    floor = statistics.median(times["MixUp"])
    rows = []
    for name, ts in times.items():
        ms = statistics.median(ts)
        target = TARGETS.get(name.split(" ")[0]) if name != "MixUp" else None
        rows.append(
            {
                "method": name,
                "ms": ms,
                "ratio": ms / floor,
                "target": target,
                "min_ms": min(ts),
                "max_ms": max(ts),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", default="preact_resnet18")
    p.add_argument("--feature-module", default="layer3")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", default=None, help="also write the rows here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run(args)
    print(
        f"# {args.model}, batch ({args.batch}, 3, {args.size}, {args.size}) on {args.device}; "
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads; median of {args.repeats} round-robin repeats"
    )
    print(f"{'method':<26} {'ms':>10} {'x MixUp':>8} {'target':>7} {'min..max ms':>20}")
    for r in rows:
        target = f"<={r['target']:.1f}" if r["target"] else ""
        spread = f"{r['min_ms']:.0f}..{r['max_ms']:.0f}"
        print(f"{r['method']:<26} {r['ms']:>10.1f} {r['ratio']:>8.2f} {target:>7} {spread:>20}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
