"""Report statistics against direct computation, and rebuilding everything from a JSONL."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mixlab.lab.bench import append_jsonl
from mixlab.lab.report import (
    describe,
    group_records,
    load_results,
    summarize,
    t_quantile,
    write_report,
)

# Two-sided 95% Student-t critical values t(0.975, df), from published tables.
T_TABLE = {1: 12.7062, 2: 4.3027, 3: 3.1824, 4: 2.7764, 5: 2.5706, 9: 2.2622, 29: 2.0452}


@pytest.mark.parametrize("df, expected", sorted(T_TABLE.items()))
def test_t_quantile_matches_the_table(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-4)


def test_t_quantile_tends_to_the_normal_and_is_symmetric():
    assert t_quantile(0.975, 1e6) == pytest.approx(1.959964, abs=1e-4)
    assert t_quantile(0.025, 7) == pytest.approx(-t_quantile(0.975, 7), abs=1e-10)
    assert t_quantile(0.995, 10) == pytest.approx(3.1693, abs=1e-4)


def test_t_quantile_agrees_with_scipy_when_available():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 5, 10, 30, 100):
        for p in (0.9, 0.975, 0.995):
            assert t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-8)


def test_describe_matches_direct_computation():
    vals = [91.2, 93.5, 92.1, 90.8]
    d = describe(vals)
    mean, std = np.mean(vals), np.std(vals, ddof=1)
    half = T_TABLE[3] * std / math.sqrt(4)
    assert d["n"] == 4
    assert d["mean"] == pytest.approx(mean)
    assert d["std"] == pytest.approx(std)
    assert d["ci_low"] == pytest.approx(mean - half, abs=1e-3)
    assert d["ci_high"] == pytest.approx(mean + half, abs=1e-3)


def test_describe_of_one_value_has_no_spread():
    d = describe([0.5])
    assert d["mean"] == 0.5 and d["std"] is None and d["ci_low"] is None


def make_record(method: str, seed: int, acc: float, *, epochs: int = 3, lr: float = 0.05) -> dict:
    history = [
        {"epoch": e, "train_loss": 1.0 / e, "test_acc": acc - 0.1 * (epochs - e), "epoch_time_s": 1}
        | {"test_nll": 0.3, "test_ece": 0.02}
        for e in range(1, epochs + 1)
    ]
    config = {"dataset": "digits", "model": "cnn8", "method": method, "seed": seed}
    config |= {"epochs": epochs, "lr": lr, "device": "cpu", "data_dir": None}
    return {
        "config": config,
        "method": method,
        "seed": seed,
        "final": {"acc": acc, "nll": 1.0 - acc, "ece": acc / 10},
        "history": history,
        "total_time_s": 2.0 + seed,
    }


ACCS = {"none": [0.90, 0.92, 0.91], "fmix": [0.95, 0.94, 0.97]}


def made_up_records() -> list[dict]:
    return [make_record(m, s, a) for m, accs in ACCS.items() for s, a in enumerate(accs)]


def test_summary_statistics_match_direct_computation():
    rows = summarize(group_records(made_up_records()))
    assert [r["label"] for r in rows] == ["none", "fmix"]
    for row in rows:
        accs = ACCS[row["method"]]
        pct = [100 * a for a in accs]
        half = T_TABLE[2] * np.std(pct, ddof=1) / math.sqrt(3)
        assert row["n"] == 3 and row["seeds"] == [0, 1, 2]
        assert row["acc"]["mean"] == pytest.approx(np.mean(pct))
        assert row["acc"]["std"] == pytest.approx(np.std(pct, ddof=1))
        assert row["acc"]["ci_high"] - row["acc"]["mean"] == pytest.approx(half, abs=1e-3)
        nll = [1 - a for a in accs]
        assert row["nll"]["mean"] == pytest.approx(np.mean(nll))
        assert row["nll"]["std"] == pytest.approx(np.std(nll, ddof=1))
        assert row["ece"]["mean"] == pytest.approx(np.mean(accs) / 10)
        assert row["time_s"]["mean"] == pytest.approx(3.0)


def test_runs_with_different_settings_are_not_averaged_together():
    records = made_up_records() + [make_record("fmix", 0, 0.5, lr=0.5)]
    rows = summarize(group_records(records))
    labels = [r["label"] for r in rows]
    assert labels == ["none", "fmix (lr=0.05)", "fmix (lr=0.5)"]
    assert rows[2]["n"] == 1


def test_report_rebuilds_every_file_from_the_jsonl_alone(tmp_path):
    out = tmp_path / "bench"
    for r in made_up_records():
        append_jsonl(out / "results.jsonl", r)
    files = write_report([out])
    for name in ("summary.md", "summary.json", "accuracy.png", "curves.png", "gallery.png"):
        assert (out / name).stat().st_size > 0, name
    assert files.gallery_error is None
    md = (out / "summary.md").read_text()
    assert "| none | 3 |" in md and "| fmix | 3 |" in md
    assert f"{100 * np.mean(ACCS['fmix']):.2f} ±" in md
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_runs"] == 6
    assert [m["method"] for m in summary["methods"]] == ["none", "fmix"]


def test_report_merges_directories_and_deduplicates(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    recs = made_up_records()
    for r in recs[:4]:
        append_jsonl(a / "results.jsonl", r)
    for r in recs[3:]:  # one run in both directories
        append_jsonl(b / "results.jsonl", r)
    records, _ = load_results([a, b])
    assert len(records) == 6
    files = write_report([a, b], tmp_path / "merged", gallery=False)
    assert files.n_records == 6 and files.gallery_png is None
    assert (tmp_path / "merged" / "accuracy.png").exists()


def test_report_without_results_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="no finished runs"):
        write_report([tmp_path])
