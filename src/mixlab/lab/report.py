"""Tables and plots rebuilt from one or more bench directories' ``results.jsonl``.

`write_report(outs, dest)` writes into `dest`:

* ``summary.md`` / ``summary.json``: per method, the number of runs, mean +/- std (ddof=1) and a
  95% Student-t interval ``mean +/- t(0.975, n-1) * std / sqrt(n)`` for accuracy (%), NLL and ECE;
* ``accuracy.png``: mean accuracy per method with 95% interval error bars (and each seed as a dot);
* ``curves.png``: test accuracy per epoch, mean over seeds per method, with a +/- std band;
* ``gallery.png``: mixed training batches for every method (see `mixlab.lab.gallery`).

Runs are grouped by their whole config except the seed (and the settings in
`mixlab.lab.bench.HASH_EXCLUDE`), so runs merged from several directories with different settings
are never averaged together; groups are labelled by method, plus the settings that tell apart
groups sharing a method.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mixlab.lab.bench import HASH_EXCLUDE, config_hash, read_results, record_key

__all__ = [
    "Group",
    "ReportFiles",
    "describe",
    "group_records",
    "load_results",
    "summarize",
    "summary_markdown",
    "t_quantile",
    "write_report",
]

METRICS = (("acc", "accuracy (%)", 100.0, 2), ("nll", "NLL", 1.0, 4), ("ece", "ECE", 1.0, 4))


# --------------------------------------------------------------------------------------------
# Statistics


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for num in (
            m * (b - m) * x / ((a + m2 - 1) * (a + m2)),
            -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1)),
        ):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b) for 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    ln = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x)
    front = math.exp(ln + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """CDF of Student's t distribution with `df` degrees of freedom."""
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """Quantile of Student's t: the `t` with ``P(T <= t) = p``, for ``0 < p < 1`` and ``df > 0``.

    Computed by bisection on `t_cdf` (no scipy needed); accurate to ~1e-10.
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p: expected 0 < p < 1, got {p}")
    if not df > 0:
        raise ValueError(f"df: expected df > 0, got {df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def describe(values: Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
    """n, mean, std (ddof=1) and a two-sided Student-t interval for the mean.

    With one value, std and the interval are None; non-finite values are dropped.
    """
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(vals)
    out: dict[str, Any] = {"n": n, "mean": None, "std": None, "ci_low": None, "ci_high": None}
    out["values"] = vals
    if n == 0:
        return out
    mean = math.fsum(vals) / n
    out["mean"] = mean
    if n >= 2:
        std = math.sqrt(math.fsum((v - mean) ** 2 for v in vals) / (n - 1))
        half = t_quantile(0.5 + confidence / 2.0, n - 1) * std / math.sqrt(n)
        out.update(std=std, ci_low=mean - half, ci_high=mean + half)
    return out


# --------------------------------------------------------------------------------------------
# Grouping


@dataclasses.dataclass
class Group:
    """Runs that differ only in their seed."""

    key: str
    label: str
    config: dict[str, Any]
    records: list[dict[str, Any]]

    @property
    def method(self) -> str:
        return str(self.config.get("method", self.records[0].get("method", "?")))

    @property
    def section(self) -> str:
        parts = [str(self.config[k]) for k in ("dataset", "model") if self.config.get(k)]
        return " / ".join(parts)


def load_results(outs: Iterable[str | Path]) -> tuple[list[dict[str, Any]], int]:
    """Finished runs of several bench directories, one per config hash; plus torn lines skipped."""
    seen: dict[str, dict[str, Any]] = {}
    skipped = 0
    for out in outs:
        records, s = read_results(out)
        skipped += s
        for r in records:
            seen.setdefault(record_key(r) or f"#{len(seen)}", r)
    return list(seen.values()), skipped


def _group_config(record: Mapping[str, Any]) -> dict[str, Any]:
    cfg = dict(record.get("config") or {})
    cfg.setdefault("method", record.get("method"))
    return {k: v for k, v in cfg.items() if k != "seed" and k not in HASH_EXCLUDE}


def group_records(records: Iterable[Mapping[str, Any]]) -> list[Group]:
    """Group runs by config-without-seed, in order of first appearance; label them."""
    groups: dict[str, Group] = {}
    for r in records:
        cfg = _group_config(r)
        key = config_hash(cfg)
        if key not in groups:
            groups[key] = Group(key, str(cfg.get("method")), cfg, [])
        groups[key].records.append(dict(r))
    out = list(groups.values())
    for g in out:
        twins = [h for h in out if h.method == g.method and h.section == g.section]
        if len(twins) > 1:
            keys = sorted({k for h in twins for k in h.config if k not in ("method",)})
            diff = [k for k in keys if len({json.dumps(h.config.get(k)) for h in twins}) > 1]
            g.label = f"{g.method} ({', '.join(f'{k}={g.config.get(k)}' for k in diff)})"
    return out


def summarize(groups: Sequence[Group]) -> list[dict[str, Any]]:
    """Per group: label, method, section, n, seeds, and `describe` of acc (%), nll, ece, time."""
    rows = []
    for g in groups:
        finals = [r.get("final") or {} for r in g.records]
        row: dict[str, Any] = {
            "label": g.label,
            "method": g.method,
            "section": g.section,
            "n": len(g.records),
            "seeds": sorted(r.get("seed", (r.get("config") or {}).get("seed")) for r in g.records),
            "config": g.config,
        }
        for name, _, scale, _ in METRICS:
            row[name] = describe([_num(f.get(name)) * scale for f in finals if _ok(f.get(name))])
        times = [_run_time(r) for r in g.records]
        row["time_s"] = describe([t for t in times if t is not None])
        rows.append(row)
    return rows


def _run_time(record: Mapping[str, Any]) -> float | None:
    for key in ("total_time_s", "train_time_s", "time_s"):
        if _ok(record.get(key)):
            return float(record[key])
    return None


def _ok(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _num(v: Any) -> float:
    return float(v)


# --------------------------------------------------------------------------------------------
# Markdown


def _cell(stats: Mapping[str, Any], digits: int) -> str:
    if stats["mean"] is None:
        return "-"
    m = f"{stats['mean']:.{digits}f}"
    if stats["std"] is None:
        return m
    return (
        f"{m} ± {stats['std']:.{digits}f} "
        f"[{stats['ci_low']:.{digits}f}, {stats['ci_high']:.{digits}f}]"
    )


def summary_markdown(rows: Sequence[Mapping[str, Any]], *, title: str = "mixlab bench") -> str:
    """A Markdown report: one table per dataset/model, one row per method group."""
    lines = [f"# {title}", ""]
    lines.append(
        "Cells: mean ± std (ddof=1) [95% Student-t interval for the mean]. "
        "Accuracy and ECE on the test set, NLL in nats."
    )
    sections: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        sections.setdefault(r["section"], []).append(r)
    for section, srows in sections.items():
        lines.append("")
        if section:
            lines.append(f"## {section}")
            lines.append("")
        common = _common_settings(srows)
        if common:
            lines.append(common)
            lines.append("")
        lines.append(
            "| method | n | " + " | ".join(label for _, label, _, _ in METRICS) + " | s/run |"
        )
        lines.append("|---|---:|" + "---:|" * len(METRICS) + "---:|")
        for r in srows:
            cells = [_cell(r[name], digits) for name, _, _, digits in METRICS]
            t = r["time_s"]["mean"]
            time_cell = f"{t:.1f}" if t is not None else "-"
            lines.append(f"| {r['label']} | {r['n']} | " + " | ".join(cells) + f" | {time_cell} |")
    return "\n".join(lines) + "\n"


def _common_settings(rows: Sequence[Mapping[str, Any]]) -> str:
    keys = ("epochs", "batch_size", "lr")
    parts = []
    for k in keys:
        vals = {json.dumps(r["config"].get(k)) for r in rows}
        if len(vals) == 1 and rows[0]["config"].get(k) is not None:
            parts.append(f"{k}={rows[0]['config'][k]}")
    seeds = sorted({s for r in rows for s in r["seeds"] if s is not None})
    if seeds:
        parts.append("seeds=" + ",".join(str(s) for s in seeds))
    return ("Settings: " + ", ".join(parts)) if parts else ""


# --------------------------------------------------------------------------------------------
# Plots


def _figure(ncols: int, width: float, height: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def _by_section(items: Sequence[Any], section_of) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for it in items:
        out.setdefault(section_of(it), []).append(it)
    return out


def plot_accuracy(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Mean test accuracy per method with 95% t-interval error bars; seeds as dots."""
    sections = _by_section(rows, lambda r: r["section"])
    fig, axes = _figure(len(sections), max(4.0, 1.1 * max(len(s) for s in sections.values())), 4)
    for ax, (section, srows) in zip(axes, sections.items(), strict=True):
        for i, r in enumerate(srows):
            st = r["acc"]
            if st["mean"] is None:
                continue
            err = None
            if st["ci_low"] is not None:
                err = [[st["mean"] - st["ci_low"]], [st["ci_high"] - st["mean"]]]
            color = f"C{i % 10}"
            ax.errorbar(i, st["mean"], yerr=err, fmt="D", ms=8, color=color, capsize=8, lw=2)
            k = len(st["values"])
            xs = [i - 0.15 + 0.3 * j / max(1, k - 1) for j in range(k)] if k > 1 else [i]
            ax.scatter(xs, st["values"], s=14, color="k", alpha=0.5, zorder=3)
        ax.set_xlim(-0.6, len(srows) - 0.4)
        ax.set_xticks(range(len(srows)))
        ax.set_xticklabels([r["label"] for r in srows], rotation=20, ha="right")
        lows = [v for r in srows for v in r["acc"]["values"]]
        lows += [r["acc"]["ci_low"] for r in srows if r["acc"]["ci_low"] is not None]
        highs = [v for r in srows for v in r["acc"]["values"]]
        highs += [r["acc"]["ci_high"] for r in srows if r["acc"]["ci_high"] is not None]
        if lows:
            pad = max(0.5, 0.15 * (max(highs) - min(lows)))
            ax.set_ylim(max(0.0, min(lows) - pad), max(highs) + pad)
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{section}: mean, 95% t-interval" if section else "mean, 95% t-interval")
        ax.grid(axis="y", alpha=0.3)
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path


def _curve(records: Sequence[Mapping[str, Any]], key: str) -> tuple[list, list, list]:
    """Epochs present in every run, with mean and std of `key` over runs."""
    per_run = []
    for r in records:
        h = {e["epoch"]: e[key] for e in r.get("history") or [] if _ok(e.get(key))}
        per_run.append(h)
    if not per_run:
        return [], [], []
    epochs = sorted(set.intersection(*(set(h) for h in per_run)))
    means, stds = [], []
    for e in epochs:
        d = describe([h[e] * 100.0 for h in per_run])
        means.append(d["mean"])
        stds.append(d["std"] or 0.0)
    return epochs, means, stds


def plot_curves(groups: Sequence[Group], path: str | Path) -> Path:
    """Test accuracy per epoch: mean over seeds per method, shaded +/- one std."""
    from matplotlib.ticker import MaxNLocator

    sections = _by_section(groups, lambda g: g.section)
    fig, axes = _figure(len(sections), 6, 4)
    for ax, (section, sgroups) in zip(axes, sections.items(), strict=True):
        for i, g in enumerate(sgroups):
            epochs, means, stds = _curve(g.records, "test_acc")
            if not epochs:
                continue
            color = f"C{i % 10}"
            ax.plot(epochs, means, color=color, lw=1.8, label=f"{g.label} (n={len(g.records)})")
            lo = [m - s for m, s in zip(means, stds, strict=True)]
            hi = [m + s for m, s in zip(means, stds, strict=True)]
            ax.fill_between(epochs, lo, hi, color=color, alpha=0.2, lw=0)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{section}: mean ± std over seeds" if section else "mean ± std over seeds")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path


# --------------------------------------------------------------------------------------------
# Everything


@dataclasses.dataclass
class ReportFiles:
    """Paths written by `write_report` (gallery None if it could not be drawn) and counts."""

    summary_md: Path
    summary_json: Path
    accuracy_png: Path
    curves_png: Path
    gallery_png: Path | None
    markdown: str
    n_records: int
    skipped_lines: int
    gallery_error: str | None = None

    def pngs(self) -> list[Path]:
        return [p for p in (self.accuracy_png, self.curves_png, self.gallery_png) if p]


def write_report(
    outs: Sequence[str | Path],
    dest: str | Path | None = None,
    *,
    gallery: bool = True,
    data_dir: str | Path | None = None,
) -> ReportFiles:
    """Rebuild summary.md, summary.json and the PNGs in `dest` (default: the first of `outs`).

    Args:
        outs: bench directories (or results.jsonl files) to read and merge.
        dest: directory to write into.
        gallery: draw gallery.png (needs the dataset; failures are reported, not raised).
        data_dir: where the dataset lives, for the gallery (default: the runs' ``data_dir``).

    Raises:
        FileNotFoundError: if no finished run is found in `outs`.
    """
    records, skipped = load_results(outs)
    if not records:
        names = ", ".join(str(Path(o)) for o in outs)
        raise FileNotFoundError(f"no finished runs found in {names} (looked for results.jsonl)")
    first = Path(outs[0])
    dest = Path(dest) if dest is not None else (first if first.is_dir() else first.parent)
    dest.mkdir(parents=True, exist_ok=True)
    groups = group_records(records)
    rows = summarize(groups)
    markdown = summary_markdown(rows)
    (dest / "summary.md").write_text(markdown)
    doc = {"sources": [str(o) for o in outs], "n_runs": len(records), "skipped_lines": skipped}
    doc["methods"] = rows
    (dest / "summary.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    files = ReportFiles(
        dest / "summary.md",
        dest / "summary.json",
        plot_accuracy(rows, dest / "accuracy.png"),
        plot_curves(groups, dest / "curves.png"),
        None,
        markdown,
        len(records),
        skipped,
    )
    if gallery:
        files.gallery_png, files.gallery_error = _gallery(groups, dest, data_dir)
    return files


def _gallery(
    groups: Sequence[Group], dest: Path, data_dir: str | Path | None
) -> tuple[Path | None, str | None]:
    from mixlab.lab.gallery import draw_gallery

    cfg = groups[0].config
    dataset = cfg.get("dataset")
    if not dataset:
        return None, "the runs' config names no dataset"
    first_record_cfg = groups[0].records[0].get("config") or {}
    data_dir = data_dir if data_dir is not None else first_record_cfg.get("data_dir")
    methods = list(dict.fromkeys(g.method for g in groups if g.config.get("dataset") == dataset))
    # Learned methods (AutoMix) draw with their trained state: seed 0's run dir per method.
    run_dirs = {}
    for g in groups:
        first = min(g.records, key=lambda r: r.get("seed", 0))
        if first.get("run_dir"):
            run_dirs.setdefault(g.method, first["run_dir"])
    try:
        path = draw_gallery(
            str(dataset), methods, dest / "gallery.png", data_dir=data_dir, run_dirs=run_dirs
        )
    except Exception as e:  # the gallery is a picture: never lose the tables for it
        return None, f"{type(e).__name__}: {e}"
    return path, None
