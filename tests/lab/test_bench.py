"""The grid runner: crash-safe JSONL, resume, shards, keys. No real training here."""

from __future__ import annotations

import dataclasses
import json

import pytest

from mixlab.lab.bench import (
    RESULTS,
    Grid,
    append_jsonl,
    config_hash,
    finished_keys,
    method_slug,
    parse_shard,
    read_jsonl,
    run_grid,
    seeds_from,
    select_shard,
)
from mixlab.lab.config import ConfigError, split_methods
from mixlab.lab.train import RunConfig


class FakeTrainer:
    """Stands in for `train_run`: records calls, returns a record of the real shape."""

    def __init__(self, fail_on_call: int | None = None):
        self.calls: list[tuple[str, int]] = []
        self.fail_on_call = fail_on_call

    def __call__(self, cfg, run_dir, *, progress=True, callback=None):
        self.calls.append((cfg.method, cfg.seed))
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise KeyboardInterrupt
        resolved = cfg.resolved()
        acc = 0.9 + 0.01 * cfg.seed + (0.02 if cfg.method != "none" else 0.0)
        history = []
        for e in range(1, resolved.epochs + 1):
            entry = {"epoch": e, "train_loss": 1.0 / e, "test_acc": acc * e / resolved.epochs}
            entry.update(test_nll=0.3, test_ece=0.05, epoch_time_s=0.01)
            history.append(entry)
            if callback is not None:
                callback({"event": "epoch", "rank": 0, "epoch": e, "epochs": resolved.epochs})
        return {
            "config": dataclasses.asdict(resolved) | {"milestones": list(resolved.milestones)},
            "method": resolved.method,
            "seed": cfg.seed,
            "final": {"acc": acc, "nll": 0.3, "ece": 0.05},
            "history": history,
            "total_time_s": 0.01,
        }


def small_grid(methods=("none", "mixup", "fmix:alpha=1,decay_power=3"), seeds=(0, 1)) -> Grid:
    return Grid({"dataset": "digits", "epochs": 2}, list(methods), list(seeds))


def test_split_methods_keeps_keyword_arguments_with_their_method():
    text = "none,fmix:alpha=1,decay_power=3,fmix+mixup,mixup:alpha=0.2"
    assert split_methods(text) == [
        "none",
        "fmix:alpha=1,decay_power=3",
        "fmix+mixup",
        "mixup:alpha=0.2",
    ]
    assert split_methods("fmix:alpha=1,decay_power=3;mixup") == [
        "fmix:alpha=1,decay_power=3",
        "mixup",
    ]
    assert split_methods(["a", " b "]) == ["a", "b"]


@pytest.mark.parametrize("bad", ["", "mixup,,fmix", "mixup,mixup", ";"])
def test_split_methods_rejects_empty_and_repeated_specs(bad):
    with pytest.raises(ConfigError):
        split_methods(bad)


def test_grid_order_is_seed_major_and_keys_are_distinct():
    runs = small_grid().runs()
    assert [(r.method, r.seed) for r in runs[:3]] == [
        ("none", 0),
        ("mixup", 0),
        ("fmix:alpha=1,decay_power=3", 0),
    ]
    assert len({r.key for r in runs}) == len(runs) == 6


def test_config_hash_covers_method_and_seed_but_not_device_or_data_dir():
    base = RunConfig(dataset="digits", method="mixup", seed=0).resolved()
    assert config_hash(base) != config_hash(dataclasses.replace(base, seed=1))
    assert config_hash(base) != config_hash(dataclasses.replace(base, method="fmix"))
    assert config_hash(base) == config_hash(dataclasses.replace(base, device="cuda", data_dir="/x"))


def test_key_is_the_resolved_config_so_explicit_defaults_are_the_same_run():
    implicit = Grid({"dataset": "digits"}, ["mixup"], [0]).runs()[0]
    explicit = Grid({"dataset": "digits", "model": "cnn8", "epochs": 15}, ["mixup"], [0]).runs()[0]
    assert implicit.key == explicit.key


def test_run_dirs_are_per_method_and_seed(tmp_path):
    runs = small_grid().runs()
    dirs = {r.run_dir(tmp_path) for r in runs}
    assert len(dirs) == len(runs)
    assert runs[2].run_dir(tmp_path) == tmp_path / "runs" / "fmix_alpha-1_decay_power-3" / "seed0"
    assert method_slug("fmix+mixup") == "fmix+mixup"


def test_grid_writes_one_line_per_run_and_bench_json(tmp_path):
    trainer = FakeTrainer()
    outcome = run_grid(small_grid(), tmp_path, train_fn=trainer, progress=False)
    assert outcome.ran == 6 and not outcome.interrupted
    records, skipped = read_jsonl(tmp_path / RESULTS)
    assert len(records) == 6 and skipped == 0
    assert all(len(r["config_hash"]) == 16 for r in records)
    bench = json.loads((tmp_path / "bench.json").read_text())
    assert bench["grid"]["methods"][2] == "fmix:alpha=1,decay_power=3"
    assert bench["grid"]["seeds"] == [0, 1]
    assert len(bench["runs"]) == 6


def test_rerun_skips_finished_runs(tmp_path):
    run_grid(small_grid(), tmp_path, train_fn=FakeTrainer(), progress=False)
    again = FakeTrainer()
    outcome = run_grid(small_grid(), tmp_path, train_fn=again, progress=False)
    assert again.calls == [] and outcome.skipped == 6 and outcome.ran == 0
    # A bigger grid in the same directory runs only the new runs.
    bigger = FakeTrainer()
    run_grid(small_grid(seeds=(0, 1, 2)), tmp_path, train_fn=bigger, progress=False)
    assert sorted(bigger.calls) == [("fmix:alpha=1,decay_power=3", 2), ("mixup", 2), ("none", 2)]


def test_torn_last_line_is_skipped_and_the_rerun_completes_that_run(tmp_path):
    grid = small_grid()
    run_grid(grid, tmp_path, train_fn=FakeTrainer(), progress=False)
    path = tmp_path / RESULTS
    data = path.read_bytes()
    lines = data.splitlines(keepends=True)
    torn = lines[-1][: len(lines[-1]) // 2]  # the crash came in the middle of the last write
    path.write_bytes(b"".join(lines[:-1]) + torn)

    records, skipped = read_jsonl(path)
    assert len(records) == 5 and skipped == 1

    trainer = FakeTrainer()
    outcome = run_grid(grid, tmp_path, train_fn=trainer, progress=False)
    assert outcome.ran == 1 and len(trainer.calls) == 1
    records, skipped = read_jsonl(path)
    assert skipped == 1  # the torn fragment stays on its own line, harmless
    assert {r["config_hash"] for r in records} == {r.key for r in grid.runs()}


def test_append_after_torn_line_starts_a_new_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"a": 1}\n{"b": ')
    append_jsonl(path, {"c": 3})
    records, skipped = read_jsonl(path)
    assert records == [{"a": 1}, {"c": 3}] and skipped == 1


def test_ctrl_c_keeps_finished_runs_and_a_rerun_resumes(tmp_path):
    grid = small_grid()
    outcome = run_grid(grid, tmp_path, train_fn=FakeTrainer(fail_on_call=3), progress=False)
    assert outcome.interrupted and outcome.ran == 2 and outcome.remaining == 4
    assert len(finished_keys(tmp_path)) == 2
    rest = FakeTrainer()
    outcome = run_grid(grid, tmp_path, train_fn=rest, progress=False)
    assert len(rest.calls) == 4 and outcome.skipped == 2
    assert len(finished_keys(tmp_path)) == 6


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7])
def test_shards_partition_the_grid(n):
    runs = small_grid().runs()
    shards = [select_shard(runs, i, n) for i in range(1, n + 1)]
    indices = sorted(r.index for s in shards for r in s)
    assert indices == list(range(len(runs)))


def test_shards_writing_into_one_directory_complete_the_grid(tmp_path):
    grid = small_grid()
    first, second = FakeTrainer(), FakeTrainer()
    run_grid(grid, tmp_path, shard=(1, 2), train_fn=first, progress=False)
    run_grid(grid, tmp_path, shard=(2, 2), train_fn=second, progress=False)
    assert len(first.calls) == len(second.calls) == 3
    assert not set(first.calls) & set(second.calls)
    assert finished_keys(tmp_path) == {r.key for r in grid.runs()}


@pytest.mark.parametrize("text", ["0/2", "3/2", "1-2", "a/b", "1/0", ""])
def test_bad_shard_specs_are_rejected(text):
    with pytest.raises(ConfigError, match="shard"):
        parse_shard(text)


def test_seeds_accept_a_count_or_a_list():
    assert seeds_from(3) == [0, 1, 2]
    assert seeds_from("3") == [0, 1, 2]
    assert seeds_from("0,5,7") == [0, 5, 7]
    for bad in ("0", "x", "-1,2", True):
        with pytest.raises(ConfigError, match="seeds"):
            seeds_from(bad)


def test_non_tty_progress_prints_one_plain_line_per_run(tmp_path, capsys):
    import io

    stream = io.StringIO()
    run_grid(small_grid(seeds=(0,)), tmp_path, train_fn=FakeTrainer(), stream=stream)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[-1].startswith("[mixlab] bench 3/3") and "ETA" in lines[-1]
    assert "\r" not in stream.getvalue()


def test_a_different_config_moves_the_old_run_dir_aside(tmp_path):
    run_grid(small_grid(seeds=(0,)), tmp_path, train_fn=FakeTrainer(), progress=False)
    old = small_grid(seeds=(0,)).runs()[0]
    (old.run_dir(tmp_path) / "checkpoint.pt").write_bytes(b"weights")
    longer = Grid({"dataset": "digits", "epochs": 3}, ["none"], [0])
    run_grid(longer, tmp_path, train_fn=FakeTrainer(), progress=False)
    aside = old.run_dir(tmp_path).with_name(f"seed0.{old.key}")
    assert (aside / "checkpoint.pt").read_bytes() == b"weights"
    marker = json.loads((old.run_dir(tmp_path) / "run.json").read_text())
    assert marker["config_hash"] == longer.runs()[0].key
