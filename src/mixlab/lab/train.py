"""One training run: dataset + model + method -> a JSON run record, resumable, optionally DDP.

    from mixlab.lab.train import RunConfig, train_run
    record = train_run(RunConfig(dataset="digits", method="fmix", epochs=10), run_dir="runs/a")
    record["final"]   # {"acc": ..., "nll": ..., "ece": ...}

With a ``run_dir``, every finished epoch is checkpointed there (``checkpoint.pt``, written
atomically) and the finished record is written to ``record.json``. Calling `train_run` again with
the same config and ``run_dir`` resumes after the last finished epoch and ends with the same numbers
as a run that never stopped: the checkpoint holds the model, optimizer, scheduler, every rank's
mixing generator and global RNG state, the method's own state, and the history; data order and
augmentation are re-derived from ``(seed, epoch)``.

Started under ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set), the run is data-parallel:
each rank trains on its slice of every global batch (all ranks draw the same permutation from the
shared seed), mixes its slice with its own generator stream ``(seed, rank)``, and evaluates a
disjoint slice of the test set; only rank 0 writes files or shows progress. ``batch_size`` is the
global batch size, so a 2-process run takes the same optimizer steps over the same samples as a
single-process run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as torch_dist
from torch import nn

import mixlab
from mixlab.lab import checkpoint as ckpt
from mixlab.lab.data import DeviceLoader, load_dataset
from mixlab.lab.distributed import (
    DistInfo,
    all_reduce_sum,
    average_gradients,
    derive_seed,
    init_distributed,
    shard_range,
)
from mixlab.lab.methods import TrainStep, build_train_step, format_spec, parse_spec
from mixlab.lab.metrics import evaluate_batches
from mixlab.lab.models import MODEL_NAMES, build_model

__all__ = ["DATASET_DEFAULTS", "RunConfig", "RunInterrupted", "ProgressBar", "train_run"]

RECORD_VERSION = 1

#: Per-dataset defaults for the RunConfig fields left as None.
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "digits": dict(model="cnn8", epochs=15, batch_size=64, lr=0.05, weight_decay=5e-4),
    "mnist": dict(model="cnn28", epochs=15, batch_size=128, lr=0.05, weight_decay=5e-4),
    "fashion_mnist": dict(model="cnn28", epochs=30, batch_size=128, lr=0.05, weight_decay=5e-4),
    "mnist1d": dict(model="cnn1d", epochs=40, batch_size=128, lr=0.05, weight_decay=5e-4),
    "cifar10": dict(model="preact_resnet18", epochs=200, batch_size=128, lr=0.1, weight_decay=5e-4),
    "cifar100": dict(
        model="preact_resnet18", epochs=200, batch_size=128, lr=0.1, weight_decay=5e-4
    ),
}
# AdamW wants a smaller step and a larger decoupled decay than SGD.
_ADAMW_DEFAULTS = dict(lr=1e-3, weight_decay=0.05)


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run. Fields left as None take `DATASET_DEFAULTS`.

    Two runs with equal resolved configs on the same device give identical records (except for
    timings). `resolved` fills in the defaults; the record stores the resolved config.
    """

    dataset: str = field(default="digits", metadata=_help("dataset name"))
    data_dir: str | None = field(default=None, metadata=_help("dataset files ($MIXLAB_DATA)"))
    model: str | None = field(default=None, metadata=_help("model name (dataset default)"))
    method: str = field(default="none", metadata=_help("method spec, e.g. 'fmix:alpha=1'"))
    epochs: int | None = field(default=None, metadata=_help("training epochs"))
    batch_size: int | None = field(default=None, metadata=_help("global batch size"))
    optimizer: Literal["sgd", "adamw"] = field(default="sgd", metadata=_help("sgd or adamw"))
    lr: float | None = field(default=None, metadata=_help("peak learning rate"))
    momentum: float = field(default=0.9, metadata=_help("SGD momentum"))
    nesterov: bool = field(default=True, metadata=_help("SGD Nesterov momentum"))
    weight_decay: float | None = field(default=None, metadata=_help("weight decay"))
    schedule: Literal["cosine", "step", "constant"] = field(
        default="cosine", metadata=_help("lr schedule after warmup")
    )
    warmup_epochs: float = field(default=0.0, metadata=_help("linear warmup length, in epochs"))
    milestones: tuple[int, ...] = field(
        default=(), metadata=_help("epochs where 'step' multiplies lr by gamma (default 50%,75%)")
    )
    gamma: float = field(default=0.1, metadata=_help("'step' schedule factor"))
    label_smoothing: float = field(default=0.0, metadata=_help("label smoothing in [0, 1)"))
    seed: int = field(default=0, metadata=_help("seed for init, data order and mixing"))
    device: str = field(default="auto", metadata=_help("auto, cpu, cuda or cuda:N"))
    amp: bool = field(default=False, metadata=_help("bf16 autocast (CUDA only)"))
    channels_last: bool = field(default=False, metadata=_help("channels-last images (CUDA)"))
    compile: bool = field(default=False, metadata=_help("torch.compile the model"))
    eval_every: int = field(default=1, metadata=_help("evaluate every N epochs (and the last)"))
    augment: bool = field(default=True, metadata=_help("the dataset's default augmentation"))
    deterministic: bool = field(default=True, metadata=_help("deterministic algorithms"))

    def __post_init__(self) -> None:
        _check_choice("optimizer", self.optimizer, ("sgd", "adamw"))
        _check_choice("schedule", self.schedule, ("cosine", "step", "constant"))
        _check_choice("model", self.model, (None, *MODEL_NAMES))
        if self.dataset not in DATASET_DEFAULTS:
            known = ", ".join(DATASET_DEFAULTS)
            raise ValueError(f"dataset: unknown dataset {self.dataset!r}; known: {known}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ValueError(f"device: expected auto, cpu, cuda or cuda:N, got {self.device!r}")
        for name in ("epochs", "batch_size", "eval_every"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
        for name in ("lr", "weight_decay", "momentum", "warmup_epochs", "gamma"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing: expected [0, 1), got {self.label_smoothing!r}")
        if list(self.milestones) != sorted(self.milestones):
            raise ValueError(f"milestones: expected increasing epochs, got {self.milestones!r}")
        parse_spec(self.method)  # raises ValueError naming the bad method or argument

    def resolved(self) -> RunConfig:
        """A copy with dataset defaults filled in, the method spec canonical, the device chosen."""
        d = dict(DATASET_DEFAULTS[self.dataset])
        if self.optimizer == "adamw":
            d.update(_ADAMW_DEFAULTS)
        changes = {k: v for k, v in d.items() if getattr(self, k) is None}
        epochs = changes.get("epochs", self.epochs)
        if self.schedule == "step" and not self.milestones:
            changes["milestones"] = (epochs // 2, epochs * 3 // 4)
        changes["milestones"] = tuple(int(m) for m in changes.get("milestones", self.milestones))
        changes["method"] = format_spec(self.method)
        if self.device == "auto":
            changes["device"] = "cuda" if torch.cuda.is_available() else "cpu"
        return dataclasses.replace(self, **changes)


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        known = ", ".join(str(c) for c in choices if c is not None)
        raise ValueError(f"{name}: unknown {name} {value!r}; known: {known}")


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during `train_run`. The last finished epoch is saved; rerun to resume.

    A `KeyboardInterrupt`, so code that does not know this class still stops.

    Attributes:
        run_dir: where the checkpoint is (None if the run had no run_dir: nothing was saved).
        epochs_done: finished epochs, all in the checkpoint.
    """

    def __init__(self, run_dir: Path | None, epochs_done: int) -> None:
        where = f"checkpoint in {run_dir}" if run_dir else "no run_dir, nothing saved"
        super().__init__(f"interrupted after {epochs_done} finished epoch(s) ({where})")
        self.run_dir = run_dir
        self.epochs_done = epochs_done


# --------------------------------------------------------------------------------------------
# Progress


class ProgressBar:
    """A one-line progress bar with rate and ETA on a TTY stream; silent otherwise.

    Args:
        total: number of steps.
        desc: text in front of the bar.
        enabled: False to stay silent; it is also silent when ``stream`` is not a terminal.
        stream: default ``sys.stderr``.
        min_interval_s: redraw at most this often.
    """

    def __init__(
        self,
        total: int,
        desc: str = "",
        *,
        enabled: bool = True,
        stream: Any = None,
        min_interval_s: float = 0.1,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled and bool(getattr(self.stream, "isatty", lambda: False)())
        self.total, self.desc, self.n, self.postfix = max(total, 1), desc, 0, ""
        self.min_interval_s = min_interval_s
        self._start = self._last = time.perf_counter()

    def update(self, n: int = 1, postfix: str | None = None) -> None:
        """Advance by ``n`` steps; ``postfix`` replaces the text after the bar."""
        self.n += n
        if postfix is not None:
            self.postfix = postfix
        now = time.perf_counter()
        if self.enabled and (now - self._last >= self.min_interval_s or self.n >= self.total):
            self._last = now
            self.stream.write("\r" + self.render(now - self._start) + "\x1b[K")
            self.stream.flush()

    def render(self, elapsed: float) -> str:
        frac = min(self.n / self.total, 1.0)
        width = 24
        filled = int(frac * width)
        rate = self.n / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.n) / rate if rate > 0 else float("nan")
        bar = "#" * filled + "." * (width - filled)
        return (
            f"{self.desc} {frac:4.0%} |{bar}| {self.n}/{self.total} "
            f"[{_clock(elapsed)}<{_clock(eta)}, {rate:.1f} it/s] {self.postfix}"
        ).strip()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "--:--"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


# --------------------------------------------------------------------------------------------
# Optimizer and schedule


def build_optimizer(params: list[nn.Parameter], cfg: RunConfig) -> torch.optim.Optimizer:
    """SGD (momentum, optional Nesterov) or AdamW with the config's lr and weight decay."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov and cfg.momentum > 0,
            weight_decay=cfg.weight_decay,
        )
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


class LRFactor:
    """Multiplier of the peak lr at optimizer step ``t``: linear warmup, then the schedule.

    Stepped once per batch, so warmup and cosine are smooth; ``milestones`` count epochs.
    """

    def __init__(self, cfg: RunConfig, steps_per_epoch: int) -> None:
        self.schedule, self.gamma = cfg.schedule, cfg.gamma
        self.milestones = tuple(cfg.milestones)
        self.steps_per_epoch = steps_per_epoch
        self.total = cfg.epochs * steps_per_epoch
        self.warmup = min(round(cfg.warmup_epochs * steps_per_epoch), self.total)

    def __call__(self, t: int) -> float:
        if t < self.warmup:
            return (t + 1) / self.warmup
        if self.schedule == "cosine":
            progress = (t - self.warmup) / max(self.total - self.warmup, 1)
            return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
        if self.schedule == "step":
            epoch = t // self.steps_per_epoch
            return self.gamma ** sum(epoch >= m for m in self.milestones)
        return 1.0


# --------------------------------------------------------------------------------------------
# Environment


@contextlib.contextmanager
def _deterministic(enabled: bool, device: torch.device) -> Iterator[None]:
    """Deterministic kernels for the duration of the run; the previous settings come back."""
    prev = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark)
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    if enabled:
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = device.type == "cuda"
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev[0], warn_only=prev_warn)
        torch.backends.cudnn.benchmark = prev[1]


def _device(cfg: RunConfig, info: DistInfo) -> torch.device:
    if cfg.device == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError(f"device: {cfg.device!r} requested but CUDA is not available")
    if cfg.device == "cuda":
        index = info.local_rank if info.enabled else torch.cuda.current_device()
        return torch.device("cuda", index)
    return torch.device(cfg.device)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def _git_revision() -> str | None:
    """HEAD of the git checkout that holds mixlab's source, or None."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(mixlab.__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def _versions() -> dict[str, str]:
    try:
        from importlib.metadata import version

        mixlab_version = version("mixlab")
    except Exception:
        mixlab_version = getattr(mixlab, "__version__", "unknown")
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "mixlab": mixlab_version,
    }


# --------------------------------------------------------------------------------------------
# The run


def train_run(
    cfg: RunConfig,
    run_dir: str | os.PathLike[str] | None = None,
    *,
    progress: bool = True,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train one model with one method and return the run record.

    Args:
        cfg: the run configuration (defaults are resolved here).
        run_dir: directory for ``checkpoint.pt`` and ``record.json``; if it holds a checkpoint of
            the same config, the run resumes from it (a finished run is not retrained). None: no
            files.
        progress: show a progress bar with ETA on stderr (only on a TTY, only on rank 0).
        callback: called on every rank after each epoch's checkpoint is written with
            ``{"event": "epoch", "rank", "epoch" (finished epochs), "epochs", "entry" (history
            entry), "model" (the bare model)}`` and at the end with ``{"event": "done", "rank",
            "record"}``. An exception it raises stops the run (the epoch is already saved).

    Returns:
        A JSON-serialisable dict with keys ``record_version``, ``config`` (resolved), ``method``
        (canonical spec), ``seed``, ``final`` (``{"acc", "nll", "ece"}`` on the test set),
        ``history`` (per epoch: ``epoch``, ``train_loss``, ``lr``, ``test_acc``, ``test_nll``,
        ``test_ece`` (None when not evaluated that epoch), ``epoch_time_s``, ``eval_time_s``),
        ``train_time_s`` (sum of epoch times), ``total_time_s`` (wall time over all calls),
        ``num_params``, ``world_size``, ``device``, ``versions`` (``python``, ``torch``,
        ``mixlab``), ``git_rev`` (None outside a git checkout), ``run_dir``.

    Under torchrun, the process group is created here and destroyed at the end. A caller that
    runs many runs in one torchrun job (a grid) should call
    `mixlab.lab.distributed.init_distributed` once itself: an existing group is used and kept.

    Raises:
        ValueError: a bad config, or a checkpoint in ``run_dir`` from a different config.
        RunInterrupted: on Ctrl-C, after the last finished epoch was saved.
    """
    cfg = cfg.resolved()
    device_type = "cuda" if cfg.device.startswith("cuda") else "cpu"
    info, created = init_distributed(device_type)
    ok = False
    try:
        device = _device(cfg, info)
        with _deterministic(cfg.deterministic, device), _fork_rng(device):
            run = _Run(cfg, None if run_dir is None else Path(run_dir), info, device)
            record = run.train(progress=progress, callback=callback)
        ok = True
        return record
    finally:
        if created:
            if ok:
                torch_dist.barrier()
            torch_dist.destroy_process_group()


@contextlib.contextmanager
def _fork_rng(device: torch.device) -> Iterator[None]:
    """The run seeds the global RNG; give the caller its own state back afterwards."""
    devices = [device.index if device.index is not None else 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


class _Run:
    """The state of one run on one rank: built from the config, trained epoch by epoch."""

    def __init__(self, cfg: RunConfig, run_dir: Path | None, info: DistInfo, device: torch.device):
        self.cfg, self.run_dir, self.info, self.device = cfg, run_dir, info, device
        self.start_time = time.perf_counter()
        if cfg.batch_size % info.world_size:
            raise ValueError(
                f"batch_size: the global batch {cfg.batch_size} must divide evenly over "
                f"{info.world_size} processes"
            )
        self.ds = load_dataset(cfg.dataset, cfg.data_dir)
        self._build_model()
        self.step: TrainStep = build_train_step(
            cfg.method,
            label_smoothing=cfg.label_smoothing,
            seed=derive_seed(cfg.seed, "policy", info.rank),
        )
        self.step.setup(self.model, num_classes=self.ds.num_classes, device=device)
        self._build_loaders()
        self.step_params = list(self.step.parameters())  # e.g. AutoMix's Mix Block
        params = list(self.model.parameters()) + self.step_params
        self.optimizer = build_optimizer(params, cfg)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, LRFactor(cfg, len(self.train_loader))
        )
        self.mix_gen = torch.Generator(device=device)
        self.mix_gen.manual_seed(derive_seed(cfg.seed, "mix", info.rank))
        torch.manual_seed(derive_seed(cfg.seed, "train", info.rank))
        self.epochs_done, self.history, self.prior_time_s = 0, [], 0.0
        self._resume()

    # ---- building

    def _build_model(self) -> None:
        cfg, ds = self.cfg, self.ds
        torch.manual_seed(derive_seed(cfg.seed, "init"))  # same init on every rank
        model = build_model(
            cfg.model,
            num_classes=ds.num_classes,
            in_channels=ds.in_channels,
            input_size=ds.input_size,
        )
        self.channels_last = (
            cfg.channels_last and self.device.type == "cuda" and len(ds.input_size) == 2
        )
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model  # the bare model: saved, evaluated, handed to methods
        trained: nn.Module = model
        if self.info.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            trained = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        if cfg.compile:
            trained = torch.compile(trained)
        self.trained = trained  # what the training step calls

    def _build_loaders(self) -> None:
        cfg, ds, info = self.cfg, self.ds, self.info
        augment = ds.default_augment if cfg.augment and ds.default_augment.enabled else None
        # Every rank draws the same global batches (shared seed) and keeps its own slice.
        self.train_loader = DeviceLoader(
            ds.train_x,
            ds.train_y,
            cfg.batch_size,
            device=self.device,
            shuffle=True,
            drop_last=True,
            augment=augment,
            mean=ds.mean,
            std=ds.std,
            seed=derive_seed(cfg.seed, "data"),
            channels_last=self.channels_last,
        )
        start, end = shard_range(len(ds.test_y), info.rank, info.world_size)
        self.test_loader = DeviceLoader(
            ds.test_x[start:end],
            ds.test_y[start:end],
            max(cfg.batch_size, 512),
            device=self.device,
            shuffle=False,
            drop_last=False,
            augment=None,
            mean=ds.mean,
            std=ds.std,
            channels_last=self.channels_last,
        )

    # ---- checkpoints

    def _checkpoint_path(self) -> Path | None:
        return None if self.run_dir is None else self.run_dir / ckpt.CHECKPOINT_NAME

    def _rank_state(self) -> dict[str, Any]:
        return {
            "global_rng": ckpt.global_rng_state(self.device),
            "mix_gen": self.mix_gen.get_state(),
            "method": self.step.state_dict(),
        }

    def _save(self) -> None:
        path = self._checkpoint_path()
        if path is None:
            return
        rank_states = _gather_objects(self._rank_state(), self.info)
        if not self.info.is_main:
            return
        state = {
            "record_version": RECORD_VERSION,
            "config": dataclasses.asdict(self.cfg),
            "world_size": self.info.world_size,
            "epochs_done": self.epochs_done,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ranks": rank_states,
            "history": self.history,
            "elapsed_s": self.prior_time_s + time.perf_counter() - self.start_time,
        }
        ckpt.save_checkpoint(path, state)

    def _resume(self) -> None:
        path = self._checkpoint_path()
        state = None if path is None else ckpt.load_checkpoint(path, map_location=self.device)
        if state is None:
            return
        saved, now = state["config"], dataclasses.asdict(self.cfg)
        diff = [k for k in now if saved.get(k) != now[k]]
        if diff:
            details = ", ".join(f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in diff)
            raise ValueError(
                f"{path} holds a run with a different config ({details}); "
                f"use another run_dir or delete the checkpoint"
            )
        if state["world_size"] != self.info.world_size:
            raise ValueError(
                f"{path} was written by {state['world_size']} process(es); "
                f"resume it with the same number, not {self.info.world_size}"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        mine = state["ranks"][self.info.rank]
        ckpt.restore_global_rng(mine["global_rng"], self.device)
        self.mix_gen.set_state(mine["mix_gen"].cpu())
        self.step.load_state_dict(mine["method"])
        self.epochs_done = state["epochs_done"]
        self.history = list(state["history"])
        self.prior_time_s = float(state["elapsed_s"])

    # ---- training

    def train(
        self, *, progress: bool, callback: Callable[[dict[str, Any]], None] | None
    ) -> dict[str, Any]:
        cfg, info = self.cfg, self.info
        steps = len(self.train_loader)
        bar = ProgressBar(
            cfg.epochs * steps,
            f"{cfg.dataset}/{cfg.model}/{cfg.method}/s{cfg.seed}",
            enabled=progress and info.is_main,
        )
        bar.update(self.epochs_done * steps, self._postfix())
        try:
            while self.epochs_done < cfg.epochs:
                entry = self._epoch(bar)
                self.history.append(entry)
                self.epochs_done += 1
                bar.update(0, self._postfix())
                self._save()
                if callback is not None:
                    callback(self._event(entry))
        except KeyboardInterrupt:
            raise RunInterrupted(self.run_dir, self.epochs_done) from None
        finally:
            bar.close()
        record = self._record()
        if self.run_dir is not None and info.is_main:
            ckpt.write_json(self.run_dir / ckpt.RECORD_NAME, record)
        if callback is not None:
            callback({"event": "done", "rank": info.rank, "record": record})
        return record

    def _event(self, entry: dict[str, Any]) -> dict[str, Any]:
        return {
            "event": "epoch",
            "rank": self.info.rank,
            "epoch": self.epochs_done,
            "epochs": self.cfg.epochs,
            "entry": entry,
            "model": self.model,
        }

    def _postfix(self) -> str:
        if not self.history:
            return ""
        last = self.history[-1]
        acc = "" if last["test_acc"] is None else f" acc {last['test_acc']:.4f}"
        return f"ep {last['epoch']} loss {last['train_loss']:.4f}{acc}"

    def _epoch(self, bar: ProgressBar) -> dict[str, Any]:
        cfg, epoch = self.cfg, self.epochs_done
        lr = self.optimizer.param_groups[0]["lr"]
        t0 = self._sync_time()
        train_loss = self._train_epoch(epoch, bar)
        t1 = self._sync_time()
        entry: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            "lr": lr,
            "test_acc": None,
            "test_nll": None,
            "test_ece": None,
            "epoch_time_s": t1 - t0,
            "eval_time_s": 0.0,
        }
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
            m = self.evaluate()
            entry.update(test_acc=m["acc"], test_nll=m["nll"], test_ece=m["ece"])
            entry["eval_time_s"] = self._sync_time() - t1
        return entry

    def _train_epoch(self, epoch: int, bar: ProgressBar) -> float:
        info, cfg = self.info, self.cfg
        local = cfg.batch_size // info.world_size
        lo, hi = info.rank * local, (info.rank + 1) * local
        self.trained.train()
        self.step.on_epoch_start(epoch, cfg.epochs)
        self.train_loader.set_epoch(epoch)
        loss_sum = torch.zeros((), device=self.device)
        n, steps = 0, len(self.train_loader)
        for xb, yb in self.train_loader:
            if info.enabled:
                xb, yb = xb[lo:hi], yb[lo:hi]
            with self._autocast():
                loss = self.step.loss(self.trained, xb, yb, self.mix_gen)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if info.enabled and self.step_params:  # DDP reduces the model's gradients only
                average_gradients(self.step_params)
            self.optimizer.step()
            self.scheduler.step()
            loss_sum += loss.detach().float()
            n += 1
            self.step.after_step(epoch * steps + n, cfg.epochs * steps)
            bar.update(1)
        # One host sync per epoch: the mean over all ranks' batches.
        return (all_reduce_sum(loss_sum) / (n * info.world_size)).item()

    def evaluate(self) -> dict[str, float]:
        """Test-set accuracy, NLL and ECE of the current model, each test sample counted once."""
        if self.info.enabled:  # rank 0's BN statistics everywhere, as in the checkpoint
            for buf in self.model.buffers():
                torch_dist.broadcast(buf, src=0)
        amp = torch.bfloat16 if self._amp_enabled() else None
        return evaluate_batches(
            self.model, self.test_loader, device=self.device, dist=self.info, autocast_dtype=amp
        )

    def _amp_enabled(self) -> bool:
        return self.cfg.amp and self.device.type == "cuda"

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self._amp_enabled():
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _sync_time(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    # ---- the record

    def _record(self) -> dict[str, Any]:
        last = self.history[-1]
        train_time = sum(e["epoch_time_s"] for e in self.history)
        return {
            "record_version": RECORD_VERSION,
            "config": dataclasses.asdict(self.cfg) | {"milestones": list(self.cfg.milestones)},
            "method": self.cfg.method,
            "seed": self.cfg.seed,
            "final": {"acc": last["test_acc"], "nll": last["test_nll"], "ece": last["test_ece"]},
            "history": self.history,
            "train_time_s": train_time,
            "total_time_s": self.prior_time_s + time.perf_counter() - self.start_time,
            "num_params": sum(p.numel() for p in self.model.parameters()),
            "world_size": self.info.world_size,
            "device": _device_name(self.device),
            "versions": _versions(),
            "git_rev": _git_revision(),
            "run_dir": None if self.run_dir is None else str(self.run_dir),
        }


def _gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj``, in rank order (a one-element list when not distributed)."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    torch_dist.all_gather_object(out, _to_cpu(obj))
    return out


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj
