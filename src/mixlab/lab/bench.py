"""A grid of runs (methods x seeds), resumable, shardable, one JSON line per finished run.

Layout of a bench directory ``OUT``::

    OUT/bench.json                      the resolved grid (base config, methods, seeds)
    OUT/results.jsonl                   one line per finished run: {"config_hash": ..., **record}
    OUT/runs/<method-slug>/seed<k>/     the run's own directory (checkpoints, so it can resume)

Crash safety: a finished run is appended to ``results.jsonl`` as one ``write`` of one full line,
then flushed and fsynced. If the process dies mid-write, the torn last line is skipped by
`read_jsonl`, and the next append first terminates it with a newline, so a crash never corrupts
finished results. A rerun skips every run whose config hash is already in the file and resumes
interrupted ones from their run directories (the trainer's checkpoints).

Order and shards: runs are ordered seed-major (seed 0 of every method, then seed 1, ...), so an
interrupted grid already has every method once. ``--shard i/n`` (1 <= i <= n) takes runs
``i-1, i-1+n, i-1+2n, ...`` of that order; the n shards partition the grid, and may write into the
same ``OUT`` (appends are single writes) or into separate directories merged by `mixlab report`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any

from mixlab.lab.config import ConfigError

__all__ = [
    "HASH_EXCLUDE",
    "BenchOutcome",
    "Grid",
    "RunSpec",
    "append_jsonl",
    "config_hash",
    "finished_keys",
    "method_slug",
    "parse_shard",
    "read_jsonl",
    "read_results",
    "run_grid",
    "select_shard",
]

RESULTS = "results.jsonl"
BENCH_JSON = "bench.json"

# Settings that say where or how fast a run happens, not what it computes: they are left out of
# the config hash, so a grid can be split over machines with different data paths or devices.
HASH_EXCLUDE = frozenset(
    {"data_dir", "device", "progress", "num_workers", "log_every", "run_dir", "out_dir"}
)


# --------------------------------------------------------------------------------------------
# Keys and names


def _config_dict(config: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    return dict(config)


def config_hash(config: Any) -> str:
    """A stable 16-hex-digit key for a resolved run config (a RunConfig or its dict).

    It covers every setting, method and seed included, except those in `HASH_EXCLUDE`.
    """
    d = {k: v for k, v in _config_dict(config).items() if k not in HASH_EXCLUDE}
    blob = json.dumps(d, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def method_slug(spec: str) -> str:
    """A directory name for a method spec.

    ``fmix:alpha=1,decay_power=3`` -> ``fmix_alpha-1_decay_power-3``; ``fmix+mixup`` stays.
    """
    s = spec.strip().replace("=", "-")
    s = re.sub(r"[^A-Za-z0-9.+-]+", "_", s).strip("_.")
    return s or "method"


def parse_shard(text: str | None) -> tuple[int, int]:
    """Parse ``"i/n"`` (1 <= i <= n) into ``(i, n)``; None means ``(1, 1)``.

    Raises:
        ConfigError: naming the bad spec.
    """
    if text is None:
        return 1, 1
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m:
        raise ConfigError(f"shard: expected i/n like 1/4, got {text!r}")
    i, n = int(m.group(1)), int(m.group(2))
    if not 1 <= i <= n:
        raise ConfigError(f"shard: expected i/n with 1 <= i <= n, got {text!r}")
    return i, n


def select_shard(runs: list[RunSpec], i: int, n: int) -> list[RunSpec]:
    """Runs ``i-1, i-1+n, ...`` of the grid order: the n shards partition the grid."""
    return runs[i - 1 :: n]


# --------------------------------------------------------------------------------------------
# The grid


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One run of a grid: its position, method, seed, resolved config and key."""

    index: int
    method: str
    seed: int
    config: Any
    key: str

    def run_dir(self, out: str | Path) -> Path:
        """``OUT/runs/<method-slug>/seed<k>``: the run's checkpoints live here."""
        return Path(out) / "runs" / method_slug(self.method) / f"seed{self.seed}"


@dataclasses.dataclass
class Grid:
    """Methods x seeds over one base configuration.

    Args:
        base: RunConfig keyword arguments shared by every run (without ``method`` and ``seed``).
        methods: method specs, as `mixlab.lab.methods.build_mixer` parses them.
        seeds: the seeds; every method runs once per seed.
    """

    base: dict[str, Any]
    methods: list[str]
    seeds: list[int]

    def __post_init__(self) -> None:
        if not self.methods:
            raise ConfigError("methods: expected at least one method")
        if not self.seeds:
            raise ConfigError("seeds: expected at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds: expected distinct seeds, got {self.seeds}")
        for m in self.methods:
            if self.methods.count(m) > 1:
                raise ConfigError(f"methods: {m!r} is listed twice")
        slugs = [method_slug(m) for m in self.methods]
        for m, s in zip(self.methods, slugs, strict=True):
            if slugs.count(s) > 1:
                raise ConfigError(f"methods: {m!r} collides with another method's directory {s!r}")
        bad = {"method", "seed"} & set(self.base)
        if bad:
            raise ConfigError(f"grid base config must not set {sorted(bad)}; use methods/seeds")

    def runs(self, make_config: Callable[..., Any] | None = None) -> list[RunSpec]:
        """Every run, seed-major; `make_config(**kwargs)` builds a config (default RunConfig).

        A run's key hashes its *resolved* config (`RunConfig.resolved()`: dataset defaults filled
        in, method spec canonical), so ``--epochs 15`` and the digits default of 15 are one run.
        """
        if make_config is None:
            from mixlab.lab.config import resolve_run_config

            def make_config(**kw: Any) -> Any:
                return resolve_run_config(kw)

        out = []
        for seed in self.seeds:
            for method in self.methods:
                cfg = make_config(**self.base, method=method, seed=seed)
                resolved = cfg.resolved() if hasattr(cfg, "resolved") else cfg
                out.append(RunSpec(len(out), method, seed, cfg, config_hash(resolved)))
        return out

    def to_json(self) -> dict[str, Any]:
        return {"base": self.base, "methods": list(self.methods), "seeds": list(self.seeds)}


# --------------------------------------------------------------------------------------------
# results.jsonl


def append_jsonl(path: str | Path, obj: Mapping[str, Any]) -> None:
    """Append `obj` as one JSON line, durably: one write of the full line, then fsync.

    If the file does not end in a newline (a line torn by a crash), the write starts with one,
    so the torn line stays isolated and skippable.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(obj, sort_keys=False, default=str, allow_nan=True) + "\n"
    data = line.encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size > 0 and _last_byte(path) != b"\n":
            data = b"\n" + data
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1)


def read_jsonl(path: str | Path) -> tuple[list[dict[str, Any]], int]:
    """Read every complete JSON object line of `path`.

    Returns:
        ``(records, skipped)``: the parsed objects in file order, and how many non-empty lines
        could not be parsed (torn by a crash). A missing file reads as ``([], 0)``.
    """
    path = Path(path)
    if not path.exists():
        return [], 0
    records, skipped = [], 0
    with open(path, "rb") as f:
        for raw in f:
            raw = raw.strip()
            if not raw:
                continue
            try:
                obj = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                skipped += 1
                continue
            if isinstance(obj, dict):
                records.append(obj)
            else:
                skipped += 1
    return records, skipped


def record_key(record: Mapping[str, Any]) -> str | None:
    """The config hash of a result line (stored, or recomputed from its ``config``)."""
    key = record.get("config_hash")
    if key:
        return str(key)
    cfg = record.get("config")
    return config_hash(cfg) if isinstance(cfg, Mapping) else None


def read_results(out: str | Path) -> tuple[list[dict[str, Any]], int]:
    """The finished runs of a bench directory (or a results.jsonl path), one per config hash."""
    path = Path(out)
    if path.is_dir() or not path.suffix:
        path = path / RESULTS
    records, skipped = read_jsonl(path)
    seen: dict[str, dict[str, Any]] = {}
    for r in records:
        seen.setdefault(record_key(r) or f"#{len(seen)}", r)
    return list(seen.values()), skipped


def finished_keys(out: str | Path) -> set[str]:
    """Config hashes of the runs already in ``OUT/results.jsonl``."""
    return {k for r in read_jsonl(Path(out) / RESULTS)[0] if (k := record_key(r))}


# --------------------------------------------------------------------------------------------
# Running


@dataclasses.dataclass
class BenchOutcome:
    """What `run_grid` did: grid size, this shard's share, and what happened to it."""

    out: Path
    total: int
    selected: int
    skipped: int = 0
    ran: int = 0
    interrupted: bool = False
    current: str | None = None

    @property
    def remaining(self) -> int:
        return self.selected - self.skipped - self.ran


def write_bench_json(out: Path, grid: Grid, runs: list[RunSpec], shard: tuple[int, int]) -> None:
    """Write ``OUT/bench.json`` atomically (temp file + rename)."""
    doc = {
        "grid": grid.to_json(),
        "order": "seed-major",
        "runs": [
            {"index": r.index, "method": r.method, "seed": r.seed, "config_hash": r.key}
            for r in runs
        ],
        "last_shard": f"{shard[0]}/{shard[1]}",
    }
    tmp = out / f".{BENCH_JSON}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    os.replace(tmp, out / BENCH_JSON)


def _prepare_run_dir(run_dir: Path, spec: RunSpec) -> None:
    """Make the run dir; move a different config's run dir aside (``seed<k>.<hash>``).

    The same method and seed under other settings (say, more epochs in the same ``OUT``) would
    otherwise meet the old run's checkpoint; it is kept, not deleted: it may be a finished run's
    final weights.
    """
    marker = run_dir / "run.json"
    if run_dir.exists():
        try:
            old = json.loads(marker.read_text()).get("config_hash")
        except (OSError, json.JSONDecodeError, AttributeError):
            old = None
        if old != spec.key and any(run_dir.iterdir()):
            aside = run_dir.with_name(f"{run_dir.name}.{old or 'unknown'}")
            n = 1
            while aside.exists():
                aside = run_dir.with_name(f"{run_dir.name}.{old or 'unknown'}.{n}")
                n += 1
            run_dir.rename(aside)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not marker.exists():
        doc = {"config_hash": spec.key, "config": _config_dict(spec.config)}
        marker.write_text(json.dumps(doc, indent=2, default=str) + "\n")


def run_grid(
    grid: Grid,
    out: str | Path,
    *,
    shard: tuple[int, int] = (1, 1),
    train_fn: Callable[..., dict[str, Any]] | None = None,
    progress: bool = True,
    stream: IO[str] | None = None,
    runs: list[RunSpec] | None = None,
) -> BenchOutcome:
    """Run this shard's part of the grid into `out`, skipping finished runs.

    Args:
        grid: the methods x seeds grid.
        out: the bench directory (created if needed).
        shard: ``(i, n)``: run only every n-th run starting at the i-th (1-based).
        train_fn: ``train_fn(config, run_dir, progress=False, callback=cb) -> record``; default
            `mixlab.lab.train.train_run` (``cb`` receives its per-epoch events, for the ETA).
        progress: show a grid-level progress bar with ETA on `stream` (default stderr).
        runs: the expanded grid, if the caller already built it (`grid.runs()`).

    Returns:
        A `BenchOutcome`; on Ctrl-C it returns with ``interrupted=True`` (finished runs are kept).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if train_fn is None:
        from mixlab.lab.train import train_run as train_fn
    runs = grid.runs() if runs is None else runs
    write_bench_json(out, grid, runs, shard)
    mine = select_shard(runs, *shard)
    done = finished_keys(out)
    todo = [r for r in mine if r.key not in done]
    outcome = BenchOutcome(out, len(runs), len(mine), skipped=len(mine) - len(todo))
    bar = GridProgress(
        [_epochs_of(r) for r in todo],
        skipped=outcome.skipped,
        stream=stream or sys.stderr,
        enabled=progress,
    )
    try:
        for spec in todo:
            outcome.current = f"{spec.method} seed {spec.seed}"
            bar.start_run(outcome.current)
            record = _run_one(spec, out, train_fn, bar.on_event)
            append_jsonl(out / RESULTS, {"config_hash": spec.key, **record})
            outcome.ran += 1
            bar.finish_run(_short_metrics(record))
        outcome.current = None
    except KeyboardInterrupt:
        outcome.interrupted = True
    finally:
        bar.close()
    return outcome


def _epochs_of(spec: RunSpec) -> int:
    cfg = spec.config.resolved() if hasattr(spec.config, "resolved") else spec.config
    epochs = _config_dict(cfg).get("epochs")
    return int(epochs) if isinstance(epochs, int) and epochs > 0 else 1


def _run_one(
    spec: RunSpec,
    out: Path,
    train_fn: Callable[..., dict[str, Any]],
    callback: Callable[[dict[str, Any]], None],
) -> dict:
    run_dir = spec.run_dir(out)
    _prepare_run_dir(run_dir, spec)
    record = train_fn(spec.config, run_dir, progress=False, callback=callback)
    if not isinstance(record, Mapping):
        raise TypeError(f"train_fn: expected a record dict, got {type(record).__name__}")
    return dict(record)


def _short_metrics(record: Mapping[str, Any]) -> str:
    final = record.get("final") or {}
    parts = []
    if isinstance(final.get("acc"), (int, float)):
        parts.append(f"acc {100 * final['acc']:.2f}%")
    t = record.get("total_time_s", record.get("time_s"))
    if isinstance(t, (int, float)):
        parts.append(f"{t:.1f}s")
    return ", ".join(parts)


def seeds_from(value: int | str | Iterable[int]) -> list[int]:
    """``3`` -> ``[0, 1, 2]``; ``"0,5,7"`` or ``[0, 5, 7]`` -> that list.

    Raises:
        ConfigError: for anything else (naming the value).
    """
    try:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, int):
            n = value
        elif isinstance(value, str) and "," not in value:
            n = int(value)
        else:
            items = value.split(",") if isinstance(value, str) else list(value)
            seeds = [int(str(s).strip()) for s in items if str(s).strip()]
            if not seeds or any(s < 0 for s in seeds):
                raise ValueError
            return seeds
    except (TypeError, ValueError):
        raise ConfigError(
            f"seeds: expected a count like 3 or a list like 0,1,2, got {value!r}"
        ) from None
    if n < 1:
        raise ConfigError(f"seeds: expected a count >= 1, got {value!r}")
    return list(range(n))


# --------------------------------------------------------------------------------------------
# Progress


def _fmt_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class GridProgress:
    """The grid-level progress bar, counted in epochs so the ETA moves within long runs.

    On a terminal it is the trainer's `ProgressBar` (one redrawn line, rate and ETA); otherwise
    (a log file, CI) it prints one plain line per finished run with the ETA.

    Args:
        epochs: epochs of each run still to do, in order.
        skipped: runs of this shard already finished (shown in the count).
        stream: where to draw (stderr).
        enabled: False for silence.
    """

    def __init__(self, epochs: list[int], *, skipped: int, stream: IO[str], enabled: bool = True):
        self.epochs, self.skipped, self.stream, self.enabled = epochs, skipped, stream, enabled
        self.total_runs = skipped + len(epochs)
        self.runs_done = skipped
        self.total_epochs = sum(epochs)
        self.epochs_done = 0
        self.run_epochs = 0  # epochs of the current run already counted
        self.label = ""
        self.start = time.monotonic()
        self.tty = enabled and bool(getattr(stream, "isatty", lambda: False)())
        self.bar = None
        if self.tty:
            from mixlab.lab.train import ProgressBar

            self.bar = ProgressBar(max(self.total_epochs, 1), self._desc(), stream=stream)
        if enabled and not self.tty and skipped:
            self._print(f"{skipped} run(s) already finished, {len(epochs)} to do")

    def _desc(self) -> str:
        return f"bench {self.runs_done}/{self.total_runs}"

    def _advance(self, n: int, postfix: str) -> None:
        n = max(0, min(n, self.total_epochs - self.epochs_done))
        self.epochs_done += n
        if self.bar is not None:
            self.bar.desc = self._desc()
            self.bar.update(n, postfix)

    def start_run(self, label: str) -> None:
        self.label, self.run_epochs = label, 0
        self._advance(0, label)

    def on_event(self, event: dict[str, Any]) -> None:
        """The trainer's callback: count finished epochs of the current run."""
        if event.get("event") != "epoch" or event.get("rank", 0) != 0:
            return
        done = int(event.get("epoch", self.run_epochs + 1))
        self._advance(done - self.run_epochs, f"{self.label} epoch {done}/{event.get('epochs')}")
        self.run_epochs = done

    def finish_run(self, summary: str) -> None:
        """A run finished: count its remaining epochs, print a line when not on a terminal."""
        index = self.runs_done - self.skipped
        rest = self.epochs[index] - self.run_epochs if index < len(self.epochs) else 0
        self.runs_done += 1
        self._advance(rest, f"{self.label}: {summary}")
        if self.enabled and not self.tty:
            elapsed = time.monotonic() - self.start
            left = self.total_epochs - self.epochs_done
            eta = elapsed / self.epochs_done * left if self.epochs_done else 0.0
            self._print(
                f"{self._desc()} ({_fmt_duration(elapsed)} elapsed, ETA {_fmt_duration(eta)}) "
                f"{self.label}: {summary}"
            )

    def _print(self, line: str) -> None:
        self.stream.write(f"[mixlab] {line}\n")
        self.stream.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
