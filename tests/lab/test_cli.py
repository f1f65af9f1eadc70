"""The `mixlab` command: errors, config files and flags, and a tiny end-to-end bench."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import mixlab.lab.train as train_module
from mixlab.lab.bench import read_jsonl
from mixlab.lab.cli import main
from tests.lab.test_bench import FakeTrainer


def run_main(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    "argv, named",
    [
        (["bench", "--methods", "none,mixupp", "--dry-run"], "mixupp"),
        (["bench", "--methods", "fmix:alpah=1", "--dry-run"], "alpah"),
        (["bench", "--dataset", "imagenet", "--dry-run"], "imagenet"),
        (["bench", "--model", "resnet9000", "--dry-run"], "resnet9000"),
        (["bench", "--shard", "3/2", "--dry-run"], "3/2"),
        (["bench", "--seeds", "zero", "--dry-run"], "zero"),
        (["bench", "--epochs", "ten", "--dry-run"], "ten"),
        (["bench", "--config", "/nonexistent/grid.toml"], "/nonexistent/grid.toml"),
        (["train", "--method", "cutmixx"], "cutmixx"),
        (["train", "--lr", "fast"], "fast"),
        (["bench", "--frobnicate", "1"], "--frobnicate"),
    ],
)
def test_bad_settings_exit_2_with_one_line_naming_the_value(argv, named, capsys, tmp_path):
    if "--dry-run" in argv:
        argv = [*argv, "--out", str(tmp_path)]
    code, out, err = run_main(argv, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("mixlab: error: ") and named in lines[0]
    assert "Traceback" not in err


def test_missing_dataset_files_are_a_clear_error(capsys, tmp_path):
    argv = ["bench", "--dataset", "mnist", "--data-dir", str(tmp_path), "--dry-run"]
    code, _, err = run_main([*argv, "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and err.startswith("mixlab: error: mnist: cannot find")


@pytest.mark.parametrize(
    "text, named",
    [("epochs = [unclosed\n", "grid.toml"), ("learning_rate = 0.1\n", "learning_rate")],
)
def test_bad_config_files_exit_2(text, named, capsys, tmp_path):
    path = tmp_path / "grid.toml"
    path.write_text(text)
    code, _, err = run_main(["bench", "--config", str(path), "--dry-run"], capsys)
    assert code == 2 and named in err and len(err.strip().splitlines()) == 1


def capture_train(monkeypatch):
    seen = {}

    def fake(cfg, run_dir=None, *, progress=True, callback=None):
        seen["cfg"] = cfg
        return FakeTrainer()(cfg, run_dir)

    monkeypatch.setattr(train_module, "train_run", fake)
    return seen


@pytest.mark.parametrize("suffix", [".toml", ".yaml"])
def test_train_flags_override_the_config_file(suffix, monkeypatch, capsys, tmp_path):
    path = tmp_path / f"run{suffix}"
    if suffix == ".toml":
        path.write_text('method = "fmix:alpha=1"\nepochs = 5\nlr = 0.01\nbatch-size = 32\n')
    else:
        path.write_text("method: fmix:alpha=1\nepochs: 5\nlr: 0.01\nbatch-size: 32\n")
    seen = capture_train(monkeypatch)
    code, out, _ = run_main(
        ["train", "--config", str(path), "--epochs", "2", "--seed", "4"], capsys
    )
    assert code == 0
    cfg = seen["cfg"]
    assert (cfg.method, cfg.epochs, cfg.lr, cfg.batch_size, cfg.seed) == (
        "fmix:alpha=1",
        2,
        0.01,
        32,
        4,
    )
    assert "seed 4" in out


def test_bench_reads_methods_and_seeds_from_the_config_file(monkeypatch, capsys, tmp_path):
    path = tmp_path / "grid.toml"
    path.write_text('methods = ["none", "fmix:alpha=1,decay_power=3"]\nseeds = 2\nepochs = 4\n')
    trainer = FakeTrainer()
    monkeypatch.setattr(train_module, "train_run", trainer)
    out_dir = tmp_path / "out"
    argv = ["bench", "--config", str(path), "--epochs", "1", "--out", str(out_dir)]
    code, out, _ = run_main([*argv, "--no-report", "--no-progress"], capsys)
    assert code == 0
    assert sorted(trainer.calls) == [
        ("fmix:alpha=1,decay_power=3", 0),
        ("fmix:alpha=1,decay_power=3", 1),
        ("none", 0),
        ("none", 1),
    ]
    records, _ = read_jsonl(out_dir / "results.jsonl")
    assert {r["config"]["epochs"] for r in records} == {1}


def test_bench_dry_run_lists_the_shard(capsys, tmp_path):
    argv = ["bench", "--methods", "none;mixup", "--seeds", "3", "--shard", "2/2"]
    code, out, _ = run_main([*argv, "--dry-run", "--out", str(tmp_path)], capsys)
    assert code == 0
    assert len(out.strip().splitlines()) == 3  # runs 1, 3, 5 of 6


def test_bench_ctrl_c_says_how_to_resume(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(train_module, "train_run", FakeTrainer(fail_on_call=2))
    argv = ["bench", "--methods", "none,mixup", "--seeds", "1", "--out", str(tmp_path)]
    code, _, err = run_main([*argv, "--no-progress"], capsys)
    assert code == 130
    assert "1 run(s) finished" in err and "resume with: mixlab bench" in err
    assert len(read_jsonl(tmp_path / "results.jsonl")[0]) == 1


def test_report_on_an_empty_directory_is_a_clear_error(capsys, tmp_path):
    code, _, err = run_main(["report", str(tmp_path)], capsys)
    assert code == 2 and "no finished runs" in err


def test_end_to_end_tiny_bench_on_digits(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "mixlab.lab", "bench", "--methods", "none,fmix+mixup"]
    cmd += [
        "--seeds",
        "2",
        "--epochs",
        "1",
        "--batch-size",
        "128",
        "--threads",
        "1",
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    records, skipped = read_jsonl(out / "results.jsonl")
    assert len(records) == 4 and skipped == 0
    for name in ("summary.md", "summary.json", "accuracy.png", "curves.png", "gallery.png"):
        assert (out / name).stat().st_size > 0, name
        assert str(out / name) in proc.stdout
    assert "| fmix+mixup | 2 |" in proc.stdout
    assert (out / "runs" / "fmix+mixup" / "seed1" / "record.json").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert [m["n"] for m in summary["methods"]] == [2, 2]
    # Rerunning trains nothing and rebuilds the same report.
    again = subprocess.run(cmd + ["--no-report"], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "0 run(s) done now, 4 already finished" in again.stderr
