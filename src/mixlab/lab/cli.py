"""The `mixlab` command.

    mixlab train  [--config FILE] [--run-dir DIR] [--<field> VALUE ...]
    mixlab bench  [--config FILE] [--methods LIST] [--seeds N|LIST] [--out DIR] [--shard i/n]
                  [--<field> VALUE ...]
    mixlab report OUT [OUT ...] [--dest DIR] [--data-dir DIR] [--no-gallery]
    mixlab data download NAME --data-dir DIR

Every `RunConfig` field is a flag (``--batch-size 64`` sets ``batch_size``); a ``--config`` file
(TOML or YAML, a flat mapping of the same names) comes first and flags override it. A bench
config file may also hold ``methods``, ``seeds``, ``out`` and ``shard``.

``mixlab bench`` with no arguments is the demo: digits, cnn8, methods
none,mixup,cutmix,fmix,fmix+mixup, 3 seeds, into runs/demo (a few minutes on two CPU cores).
The demo's dataset/model/epochs apply only when no dataset is given (by flag or file).

Method lists: split on ``;`` if there is one, else on commas, where a piece that looks like
``key=value`` belongs to the method before it: ``none,fmix:alpha=1,decay_power=3,mixup`` is three
methods.

User errors (unknown method, dataset or model, missing data, bad shard, unreadable config) exit
with status 2 and one line ``mixlab: error: ...``; Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from mixlab.lab.config import (
    ConfigError,
    FieldInfo,
    add_run_config_flags,
    coerce_settings,
    flag_overrides,
    load_config_file,
    resolve_run_config,
    split_methods,
)

__all__ = ["DEMO", "main"]

# `mixlab bench` with no arguments: 15 runs that finish in about two minutes on two CPU cores.
# One torch thread: on tiny models intra-op threads only add synchronisation, and when other
# processes share the two cores, two spinning threads per process run 5-20x slower.
DEMO: dict[str, Any] = {
    "settings": {"dataset": "digits", "model": "cnn8", "epochs": 10},
    "threads": 1,
    "methods": "none,mixup,cutmix,fmix,fmix+mixup",
    "seeds": 3,
    "out": "runs/demo",
}
BENCH_KEYS = ("methods", "seeds", "out", "shard")


class CLIError(Exception):
    """Printed as ``mixlab: error: <message>``; exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise CLIError(f"{message} (see '{self.prog} --help')")


# --------------------------------------------------------------------------------------------
# Parsers


def _run_fields() -> tuple[list[FieldInfo], str | None]:
    """RunConfig's fields, or an explanation of why the trainer cannot be imported."""
    try:
        from mixlab.lab.config import run_config_fields

        return run_config_fields(), None
    except ImportError as e:
        return [], f"the trainer (mixlab.lab.train) cannot be imported: {e}"


def _build_parser(fields: list[FieldInfo]) -> _Parser:
    parser = _Parser(
        prog="mixlab",
        description="Mixed-sample data augmentation lab: train, benchmark grids, reports.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("train", help="train one configuration", description=_train_doc())
    p.add_argument("--config", metavar="FILE", help="TOML or YAML file of RunConfig settings")
    p.add_argument("--run-dir", metavar="DIR", help="checkpoints + record.json; resumes if set")
    p.add_argument("--json", action="store_true", help="print the whole run record as JSON")
    p.add_argument("--no-progress", action="store_true", help="no per-epoch progress")
    p.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (default: torch's)")
    _add_fields(p, fields, exclude=())

    p = sub.add_parser("bench", help="run a grid of methods x seeds", description=_bench_doc())
    p.add_argument("--config", metavar="FILE", help="TOML or YAML: settings, methods, seeds")
    p.add_argument("--methods", metavar="LIST", help=f"method specs (default: {DEMO['methods']})")
    p.add_argument("--seeds", metavar="N|LIST", help="seed count or list (default: 3 -> 0,1,2)")
    p.add_argument("--out", metavar="DIR", help=f"bench directory (default: {DEMO['out']})")
    p.add_argument("--shard", metavar="i/n", help="run only runs i-1, i-1+n, ... (1 <= i <= n)")
    p.add_argument("--dry-run", action="store_true", help="list this shard's runs and exit")
    p.add_argument("--no-report", action="store_true", help="skip the summary and plots")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="torch CPU threads (default: 1 for the demo, else torch's)",
    )
    _add_fields(p, fields, exclude=("method", "seed"), defaults=DEMO["settings"])

    p = sub.add_parser("report", help="summary tables and plots from results.jsonl")
    p.add_argument("outs", nargs="+", metavar="OUT", help="bench directories (merged)")
    p.add_argument("--dest", metavar="DIR", help="write here (default: the first OUT)")
    p.add_argument("--data-dir", metavar="DIR", help="dataset location for the gallery")
    p.add_argument("--no-gallery", action="store_true", help="skip gallery.png")

    p = sub.add_parser("data", help="dataset files")
    data_sub = p.add_subparsers(dest="data_command", metavar="ACTION", parser_class=_Parser)
    data_sub.required = True
    d = data_sub.add_parser("download", help="download a dataset's official files")
    d.add_argument("name", metavar="NAME", help="cifar10, cifar100, mnist or fashion_mnist")
    d.add_argument("--data-dir", metavar="DIR", help="destination (default: $MIXLAB_DATA)")
    d.add_argument("--timeout", type=float, default=60.0, help="seconds per stalled connection")
    return parser


def _add_fields(
    p: argparse.ArgumentParser,
    fields: list[FieldInfo],
    exclude: Sequence[str],
    defaults: Mapping[str, Any] | None = None,
) -> None:
    taken = {s.lstrip("-").replace("-", "_") for s in p._option_string_actions}
    clash = {f.name for f in fields if f.name in taken}
    add_run_config_flags(p, fields, exclude={*exclude, *clash}, defaults=defaults)


def _train_doc() -> str:
    return "Train one configuration. Flags override --config; unset fields keep RunConfig defaults."


def _bench_doc() -> str:
    return (
        "Run methods x seeds into OUT/results.jsonl (one JSON line per finished run). Rerunning "
        "skips finished runs and resumes interrupted ones. With no arguments: the digits demo "
        f"({DEMO['methods']}, {DEMO['seeds']} seeds, into {DEMO['out']}); the demo's dataset, "
        "model and epochs apply only when no dataset is given, else the dataset's defaults do. "
        "Method lists split on ';' if present, else on commas not followed by key=value."
    )


# --------------------------------------------------------------------------------------------
# Checks that turn late failures into early one-line errors


def canonical_methods(specs: Sequence[str]) -> list[str]:
    """Check every method spec by building it once; return the canonical specs.

    Raises:
        ConfigError: naming the bad spec (unknown method or argument, bad value).
    """
    from mixlab.lab.methods import build_train_step, format_spec

    out = []
    for spec in specs:
        try:
            build_train_step(spec)
            out.append(format_spec(spec))
        except (ValueError, TypeError) as e:
            raise ConfigError(str(e)) from None
    return out


def check_data(config: Any) -> None:
    """Fail fast if the config's model is unknown or its dataset cannot be loaded.

    Raises:
        ConfigError: naming the model, or the missing file and where it was looked for.
    """
    cfg = _as_dict(config)
    model = cfg.get("model")
    if model is not None:
        from mixlab.lab.models import MODEL_NAMES

        if model not in MODEL_NAMES:
            raise ConfigError(f"unknown model {model!r}; expected one of {', '.join(MODEL_NAMES)}")
    dataset = cfg.get("dataset")
    if dataset is not None:
        from mixlab.lab.data import load_dataset

        try:
            load_dataset(dataset, cfg.get("data_dir"))
        except (ValueError, OSError) as e:  # unknown name, missing or damaged files
            raise ConfigError(str(e)) from None


def _as_dict(config: Any) -> dict[str, Any]:
    import dataclasses

    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    return dict(config)


# --------------------------------------------------------------------------------------------
# Commands


def cmd_train(ns: argparse.Namespace, fields: list[FieldInfo]) -> int:
    from mixlab.lab.train import train_run

    _set_threads(ns.threads)
    file_cfg = load_config_file(ns.config) if ns.config else {}
    cfg = resolve_run_config(file_cfg, flag_overrides(ns, fields))
    canonical_methods([cfg.method])
    check_data(cfg)
    run_dir = Path(ns.run_dir) if ns.run_dir else None
    try:
        record = train_run(cfg, run_dir, progress=not ns.no_progress)
    except KeyboardInterrupt:
        hint = f"; rerun with --run-dir {run_dir} to resume" if run_dir else ""
        _err(f"interrupted{hint}")
        return 130
    if ns.json:
        print(json.dumps(record, indent=2, default=str))
    else:
        print(_final_line(record))
        if run_dir is not None:
            print(f"run directory: {run_dir}")
    return 0


def _final_line(record: Mapping[str, Any]) -> str:
    f = record.get("final") or {}
    parts = [f"{record.get('method', '?')} seed {record.get('seed', '?')}:"]
    if "acc" in f:
        parts.append(f"acc {100 * f['acc']:.2f}%")
    for k in ("nll", "ece"):
        if k in f:
            parts.append(f"{k} {f[k]:.4f}")
    t = record.get("total_time_s", record.get("time_s"))
    if isinstance(t, (int, float)):
        parts.append(f"({t:.1f} s)")
    return " ".join(parts)


def _bench_settings(ns: argparse.Namespace, fields: list[FieldInfo]) -> dict[str, Any]:
    """Resolve the bench: methods, seeds, out, shard and the typed base settings."""
    from mixlab.lab.bench import seeds_from

    file_cfg = load_config_file(ns.config) if ns.config else {}
    bench = {k: file_cfg.pop(k) for k in BENCH_KEYS if k in file_cfg}
    if "method" in file_cfg and "methods" not in bench:
        bench["methods"] = [file_cfg.pop("method")]
    if "seed" in file_cfg and "seeds" not in bench:
        bench["seeds"] = [file_cfg.pop("seed")]
    flags = flag_overrides(ns, fields)
    given = {**file_cfg, **flags}
    is_demo = "dataset" not in given
    demo = DEMO["settings"] if is_demo else {}
    base = coerce_settings([demo, file_cfg, flags], fields, ignore=("method", "seed"))
    methods = ns.methods if ns.methods is not None else bench.get("methods", DEMO["methods"])
    seeds = ns.seeds if ns.seeds is not None else bench.get("seeds", DEMO["seeds"])
    return {
        "base": base,
        "methods": split_methods(methods),
        "seeds": seeds_from(seeds),
        "out": Path(ns.out if ns.out is not None else bench.get("out", DEMO["out"])),
        "shard": ns.shard if ns.shard is not None else bench.get("shard"),
        "threads": ns.threads if ns.threads is not None else DEMO["threads"] if is_demo else None,
    }


def cmd_bench(ns: argparse.Namespace, fields: list[FieldInfo], argv: Sequence[str]) -> int:
    from mixlab.lab.bench import Grid, finished_keys, parse_shard, run_grid, select_shard

    s = _bench_settings(ns, fields)
    shard = parse_shard(s["shard"])
    _set_threads(s["threads"])
    grid = Grid(s["base"], canonical_methods(s["methods"]), s["seeds"])
    runs = grid.runs()
    check_data(runs[0].config)
    out = s["out"]
    if ns.dry_run:
        done = finished_keys(out)
        for r in select_shard(runs, *shard):
            status = "done" if r.key in done else "todo"
            print(f"{r.index:4d}  {status}  seed {r.seed}  {r.method}  {r.run_dir(out)}")
        return 0
    outcome = run_grid(grid, out, shard=shard, progress=not ns.no_progress, runs=runs)
    if outcome.interrupted:
        cmd = shlex.join(["mixlab", *argv])
        _err(
            f"interrupted during {outcome.current or 'the grid'}; {outcome.ran} run(s) finished "
            f"now, {outcome.skipped} before, {outcome.remaining} left. Finished runs are kept in "
            f"{out / 'results.jsonl'}; resume with: {cmd}"
        )
        return 130
    print(
        f"bench: {outcome.ran} run(s) done now, {outcome.skipped} already finished "
        f"(shard {shard[0]}/{shard[1]}: {outcome.selected} of {outcome.total} runs) in {out}",
        file=sys.stderr,
    )
    if ns.no_report:
        return 0
    return _report([out], None, gallery=True, data_dir=None)


def _set_threads(n: int | None) -> None:
    if n is None:
        return
    if n < 1:
        raise ConfigError(f"threads: expected an integer >= 1, got {n}")
    import torch

    torch.set_num_threads(n)


def cmd_report(ns: argparse.Namespace) -> int:
    return _report(ns.outs, ns.dest, gallery=not ns.no_gallery, data_dir=ns.data_dir)


def _report(outs: Sequence[str | Path], dest: Any, *, gallery: bool, data_dir: Any) -> int:
    from mixlab.lab.report import write_report

    try:
        files = write_report(outs, dest, gallery=gallery, data_dir=data_dir)
    except FileNotFoundError as e:
        raise ConfigError(str(e)) from None
    print(files.markdown)
    if files.skipped_lines:
        _err(f"warning: skipped {files.skipped_lines} unreadable line(s) (torn by a crash?)")
    if files.gallery_error:
        _err(f"warning: gallery.png not drawn: {files.gallery_error}")
    print(f"summary: {files.summary_md}  {files.summary_json}")
    for p in files.pngs():
        print(f"plot:    {p}")
    return 0


def cmd_data(ns: argparse.Namespace) -> int:
    from mixlab.lab.data.download import download

    try:
        root = download(ns.name, ns.data_dir, timeout=ns.timeout)
    except (ValueError, OSError) as e:
        raise ConfigError(str(e)) from None
    print(f"{ns.name}: files in {root}")
    return 0


# --------------------------------------------------------------------------------------------
# Entry point


def _err(message: str) -> None:
    print(f"mixlab: {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `mixlab` command; returns the exit status (0, 2 for user errors, 130 for Ctrl-C)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    fields, why = _run_fields() if command in ("train", "bench") else ([], None)
    try:
        if why is not None:
            raise CLIError(why)
        ns = _build_parser(fields).parse_args(argv)
        if ns.command == "train":
            return cmd_train(ns, fields)
        if ns.command == "bench":
            return cmd_bench(ns, fields, argv)
        if ns.command == "report":
            return cmd_report(ns)
        return cmd_data(ns)
    except (CLIError, ConfigError) as e:
        _err(f"error: {' '.join(str(e).split())}")
        return 2
    except KeyboardInterrupt:
        _err("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
