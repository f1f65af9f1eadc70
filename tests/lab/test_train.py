"""One training run on sklearn digits: it learns, it is reproducible, it resumes exactly."""

from __future__ import annotations

import io
import json
import math

import pytest
import torch

from mixlab.lab.checkpoint import CHECKPOINT_NAME, RECORD_NAME, load_checkpoint
from mixlab.lab.train import LRFactor, ProgressBar, RunConfig, RunInterrupted, train_run

TIME_KEYS = {"epoch_time_s", "eval_time_s", "train_time_s", "total_time_s", "run_dir"}


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny models on a shared 2-core machine: more threads only add contention.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def numbers(record: dict) -> dict:
    """The record without wall-clock timings and paths."""
    out = {k: v for k, v in record.items() if k not in TIME_KEYS}
    out["history"] = [{k: v for k, v in e.items() if k not in TIME_KEYS} for e in out["history"]]
    return out


def fast(**kw) -> RunConfig:
    kw = {"dataset": "digits", "epochs": 1, "batch_size": 128, "lr": 0.1, **kw}
    return RunConfig(**kw)


def test_two_epochs_on_digits_learn_far_above_chance(tmp_path):
    record = train_run(RunConfig(dataset="digits", epochs=2), tmp_path / "run", progress=False)
    assert record["final"]["acc"] > 0.6  # 10 classes: chance is 0.1
    assert record["history"][-1]["train_loss"] < record["history"][0]["train_loss"]
    assert record["config"]["model"] == "cnn8" and record["config"]["epochs"] == 2
    assert json.loads((tmp_path / "run" / RECORD_NAME).read_text())["final"] == record["final"]
    json.dumps(record, allow_nan=False)  # JSON-serialisable as it is


def test_record_has_the_documented_keys():
    record = train_run(fast(method="cutmix"), progress=False)
    assert set(record) >= {
        "config", "method", "seed", "final", "history", "train_time_s", "total_time_s",
        "num_params", "world_size", "device", "versions", "git_rev", "run_dir",
    }  # fmt: skip
    assert set(record["final"]) == {"acc", "nll", "ece"}
    assert set(record["history"][0]) >= {
        "epoch", "train_loss", "test_acc", "test_nll", "test_ece", "epoch_time_s",
    }  # fmt: skip
    assert set(record["versions"]) == {"python", "torch", "mixlab"}
    assert record["method"] == "cutmix" and record["world_size"] == 1


def test_same_seed_gives_the_same_record_and_another_seed_does_not():
    cfg = fast(method="fmix+mixup")
    a = train_run(cfg, progress=False)
    b = train_run(cfg, progress=False)
    c = train_run(fast(method="fmix+mixup", seed=1), progress=False)
    assert numbers(a) == numbers(b)
    assert a["final"] != c["final"]


def test_caller_rng_state_is_left_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    train_run(fast(), progress=False)
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize(
    "method", ["fmix+mixup", pytest.param("mixup|cutmix:alpha=0.5", marks=pytest.mark.slow)]
)
def test_resume_after_a_crash_gives_the_uninterrupted_record(tmp_path, method):
    cfg = fast(method=method, epochs=3, warmup_epochs=1.5, label_smoothing=0.1)
    whole = train_run(cfg, tmp_path / "whole", progress=False)

    # After one epoch of 11 batches: Alternate stands at an odd position, the schedule mid-warmup.
    def crash_after_one(event):
        if event["event"] == "epoch" and event["epoch"] == 1:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        train_run(cfg, tmp_path / "split", progress=False, callback=crash_after_one)
    assert load_checkpoint(tmp_path / "split" / CHECKPOINT_NAME)["epochs_done"] == 1
    assert not (tmp_path / "split" / RECORD_NAME).exists()

    seen = []
    resumed = train_run(cfg, tmp_path / "split", progress=False, callback=seen.append)
    assert [e["epoch"] for e in seen if e["event"] == "epoch"] == [2, 3]  # only the missing ones
    assert numbers(resumed) == numbers(whole)


def test_ctrl_c_raises_run_interrupted_and_the_run_resumes(tmp_path):
    cfg = fast(epochs=2)

    def ctrl_c(event):
        raise KeyboardInterrupt

    with pytest.raises(RunInterrupted) as info:
        train_run(cfg, tmp_path, progress=False, callback=ctrl_c)
    assert info.value.epochs_done == 1 and isinstance(info.value, KeyboardInterrupt)
    resumed = train_run(cfg, tmp_path, progress=False)
    assert numbers(resumed) == numbers(train_run(cfg, progress=False))


def test_a_finished_run_is_returned_without_training_again(tmp_path):
    cfg = fast()
    first = train_run(cfg, tmp_path, progress=False)
    seen = []
    again = train_run(cfg, tmp_path, progress=False, callback=seen.append)
    assert [e["event"] for e in seen] == ["done"]
    assert numbers(again) == numbers(first)


def test_resuming_with_a_different_config_is_refused(tmp_path):
    train_run(fast(), tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"different config \(lr: 0.1 -> 0.2\)"):
        train_run(fast(lr=0.2), tmp_path, progress=False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "fmixx"}, "unknown method 'fmixx'"),
        ({"method": "fmix:decay=3"}, "unknown argument 'decay'"),
        ({"dataset": "imagenet"}, "unknown dataset 'imagenet'"),
        ({"model": "resnet50"}, "unknown model 'resnet50'"),
        ({"optimizer": "lbfgs"}, "unknown optimizer 'lbfgs'"),
        ({"schedule": "linear"}, "unknown schedule 'linear'"),
        ({"epochs": 0}, "epochs"),
        ({"lr": -1.0}, "lr"),
        ({"label_smoothing": 1.0}, "label_smoothing"),
        ({"device": "tpu"}, "device"),
        ({"milestones": (5, 2)}, "milestones"),
    ],
)
def test_bad_configs_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RunConfig(**kwargs)


def test_resolved_fills_dataset_defaults_and_canonical_method():
    spec = "FMix:decay_power=3,alpha=1"
    cfg = RunConfig(dataset="digits", method=spec, schedule="step").resolved()
    assert cfg.model == "cnn8" and cfg.batch_size > 0 and cfg.lr > 0 and cfg.epochs > 0
    assert cfg.method == "fmix:alpha=1,decay_power=3"
    assert cfg.milestones == (cfg.epochs // 2, cfg.epochs * 3 // 4)
    assert cfg.device in ("cpu", "cuda")
    assert RunConfig(optimizer="adamw").resolved().lr == 1e-3


def test_lr_schedule_warms_up_linearly_then_decays():
    cos = LRFactor(RunConfig(epochs=10, warmup_epochs=2).resolved(), steps_per_epoch=5)
    assert [cos(t) for t in range(3)] == pytest.approx([0.1, 0.2, 0.3])
    assert cos(10) == pytest.approx(1.0) and cos(49) < 0.01
    assert all(cos(t) >= cos(t + 1) for t in range(10, 49))
    step = LRFactor(RunConfig(epochs=10, schedule="step", milestones=(4, 8)).resolved(), 5)
    assert [step(t) for t in (0, 19, 20, 39, 40)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])
    const = LRFactor(RunConfig(epochs=3, schedule="constant").resolved(), 5)
    assert {const(t) for t in range(15)} == {1.0}


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_draws_eta_on_a_tty_and_nothing_elsewhere():
    tty, pipe = _Tty(), io.StringIO()
    for stream in (tty, pipe):
        bar = ProgressBar(10, "run", stream=stream, min_interval_s=0.0)
        for _ in range(10):
            bar.update(1, "loss 0.5")
        bar.close()
    assert "10/10" in tty.getvalue() and "loss 0.5" in tty.getvalue() and "<" in tty.getvalue()
    assert pipe.getvalue() == ""
    assert not math.isnan(ProgressBar(1, stream=tty).total)
