"""ManifoldMix and AutoMix in the lab: specs, the trainer's hooks, checkpoints, DDP, gallery."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from mixlab.lab.bench import read_jsonl
from mixlab.lab.checkpoint import CHECKPOINT_NAME, RECORD_NAME, load_checkpoint
from mixlab.lab.data import DeviceLoader, load_dataset
from mixlab.lab.gallery import draw_gallery, load_automix
from mixlab.lab.methods import AutoMixStep, ManifoldMixStep, build_train_step, format_spec
from mixlab.lab.metrics import evaluate_batches
from mixlab.lab.models import build_model
from mixlab.lab.train import RunConfig, train_run
from tests.lab.test_ddp import _free_port
from tests.lab.test_train import numbers

SMALL = {"cnn8": (1, (8, 8)), "cnn28": (1, (28, 28)), "cnn1d": (1, (40,)), "mlp": (1, (8, 8))}


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny models on a shared 2-core machine: more threads only add contention.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def small_model(name: str) -> nn.Module:
    channels, size = SMALL[name]
    return build_model(name, num_classes=10, in_channels=channels, input_size=size)


def fast(**kw) -> RunConfig:
    kw = {"dataset": "digits", "epochs": 1, "batch_size": 128, "lr": 0.1, **kw}
    return RunConfig(**kw)


@pytest.fixture(scope="module")
def automix_run(tmp_path_factory):
    """A finished 3-epoch AutoMix run on digits: its record and run directory."""
    torch.set_num_threads(1)
    run_dir = tmp_path_factory.mktemp("automix") / "whole"
    cfg = fast(method="automix", epochs=3, warmup_epochs=1.5, label_smoothing=0.1)
    return cfg, train_run(cfg, run_dir, progress=False), run_dir


# ---- specs


def test_specs_build_model_aware_steps_and_format_canonically():
    assert isinstance(build_train_step("manifoldmix"), ManifoldMixStep)
    assert isinstance(build_train_step("automix"), AutoMixStep)
    assert format_spec(" AutoMix: feature_module=layer3, alpha=2 ") == (
        "automix:alpha=2,feature_module=layer3"
    )
    assert format_spec("manifoldmix:layers=0-1-2") == "manifoldmix:layers=0-1-2"
    assert format_spec("automix:lam_loss_weight=0.1-0") == "automix:lam_loss_weight=0.1-0"


@pytest.mark.parametrize(
    ("layers", "want"),
    [
        (None, ("", "layer1", "layer2")),
        ("0-1-2", ("", "layer1", "layer2")),
        ("input-layer2-layer3", ("", "layer2", "layer3")),
        ("layer2.0", ("layer2.0",)),
        ("3", ("layer3",)),
    ],
)
def test_manifoldmix_layers_are_stage_indices_or_names(layers, want):
    spec = "manifoldmix" if layers is None else f"manifoldmix:layers={layers}"
    step = build_train_step(spec)
    assert step.resolve_layers(small_model("cnn28")) == want


def test_default_places_follow_each_lab_models_stages():
    got = {
        name: (
            ManifoldMixStep.default_layers(small_model(name)),
            AutoMixStep().resolve_feature_module(small_model(name)) if name != "mlp" else None,
        )
        for name in SMALL
    }
    assert got == {
        "cnn8": (("", "layer1"), "layer2"),
        "cnn28": (("", "layer1", "layer2"), "layer3"),
        "cnn1d": (("", "layer1", "layer2"), "layer3"),
        "mlp": (("", "layer1"), None),
    }
    four = build_model("preact_resnet18", num_classes=10)  # the paper's layer3 of four stages
    assert AutoMixStep().resolve_feature_module(four) == "layer3"
    assert ManifoldMixStep.default_layers(four) == ("", "layer1", "layer2")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("automix:alpha=0", "alpha"),
        ("automix:mode=pair", "mode"),
        ("automix:upsample=cubic", "upsample"),
        ("automix:lam_loss_weight=0.1-0.2-0.3", "lam_loss_weight"),
        ("automix:feature_module=0", "feature_module"),
        ("automix:feature_modul=layer3", "unknown argument 'feature_modul'"),
        ("manifoldmix:alpha=-1", "alpha"),
        ("manifoldmix:layers=layer1--layer2", "layers"),
    ],
)
def test_bad_arguments_fail_when_the_spec_is_built(spec, message):
    with pytest.raises(ValueError, match=message):
        build_train_step(spec)


def test_places_the_model_lacks_fail_at_setup_naming_its_stages():
    model = small_model("cnn8")
    with pytest.raises(ValueError, match=r"stage 5 requested.*'layer1', 'layer2'"):
        build_train_step("manifoldmix:layers=0-5").setup(model, num_classes=10, device="cpu")
    with pytest.raises(ValueError, match="no submodule 'layer7'"):
        build_train_step("automix:feature_module=layer7").setup(model, num_classes=10, device="cpu")


def test_automix_on_the_flat_mlp_is_a_clear_error():
    with pytest.raises(ValueError, match=r"flat hidden states.*convolutional model"):
        train_run(fast(model="mlp", method="automix"), progress=False)
    step = build_train_step("automix:feature_module=layer1")
    with pytest.raises(ValueError, match="flat hidden states"):
        step.setup(small_model("mlp"), num_classes=10, device="cpu")


def test_manifoldmix_trains_through_the_flat_mlp_stages():
    model = small_model("mlp")
    step = build_train_step("manifoldmix:layers=1-2")
    step.setup(model, num_classes=10, device=torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)
    step.loss(model, x, y, g).backward()
    assert step.mm.last_layer in ("layer1", "layer2")
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize(
    "name", ["preact_resnet18", "fast_resnet", pytest.param("wrn28_10", marks=pytest.mark.slow)]
)
@pytest.mark.parametrize("spec", ["manifoldmix", "automix"])
def test_a_training_step_runs_on_the_large_lab_models(name, spec):
    model = build_model(name, num_classes=10, in_channels=3, input_size=(32, 32))
    step = build_train_step(spec)
    step.setup(model, num_classes=10, device=torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(4, 3, 32, 32, generator=g), torch.randint(0, 10, (4,), generator=g)
    step.loss(model, x, y, g).backward()
    step.after_step(1, 10)
    assert all(p.grad is not None for p in [*model.parameters(), *step.parameters()])


def test_manifoldmix_mixes_even_when_the_model_is_compiled():
    model = small_model("cnn8").eval()
    compiled = torch.compile(model, backend="aot_eager")
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    compiled(x)  # compiled once without the hook: the graph would be reused unmixed
    step = build_train_step("manifoldmix:layers=1")
    step.setup(model, num_classes=10, device=torch.device("cpu"))
    with torch.no_grad():
        eager = step.loss(model, x, y, torch.Generator().manual_seed(1))
        through_compiled = step.loss(compiled, x, y, torch.Generator().manual_seed(1))
    torch.testing.assert_close(through_compiled, eager)


# ---- the trainer


def test_mix_block_is_optimized_and_the_schedules_reach_their_ends(automix_run):
    cfg, record, run_dir = automix_run
    state = load_checkpoint(run_dir / CHECKPOINT_NAME)
    method = state["ranks"][0]["method"]
    assert set(method) == {"mix_block", "ema_model", "schedule"}
    model = build_model("cnn8", num_classes=10, in_channels=1, input_size=(8, 8))
    n_model, n_block = len(list(model.parameters())), len(method["mix_block"])
    assert state["optimizer"]["param_groups"][0]["params"] == list(range(n_model + n_block))
    # Every parameter, the Mix Block's included, got gradients: SGD keeps a momentum buffer.
    assert len(state["optimizer"]["state"]) == n_model + n_block
    assert method["schedule"] == {"momentum": 1.0, "lam_loss_weight": 0.0}
    assert record["final"]["acc"] > 0.6


def test_automix_resume_after_two_epochs_gives_the_uninterrupted_record(automix_run, tmp_path):
    cfg, whole, _ = automix_run

    def crash_after_two(event):
        if event["event"] == "epoch" and event["epoch"] == 2:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        train_run(cfg, tmp_path, progress=False, callback=crash_after_two)
    schedule = load_checkpoint(tmp_path / CHECKPOINT_NAME)["ranks"][0]["method"]["schedule"]
    assert 0.999 < schedule["momentum"] < 1.0 and 0.0 < schedule["lam_loss_weight"] < 0.1
    resumed = train_run(cfg, tmp_path, progress=False)
    assert numbers(resumed) == numbers(whole)


def test_manifoldmix_resume_gives_the_uninterrupted_record(tmp_path):
    cfg = fast(method="manifoldmix", epochs=2, label_smoothing=0.1)
    whole = train_run(cfg, progress=False)

    def crash_after_one(event):
        if event["event"] == "epoch" and event["epoch"] == 1:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        train_run(cfg, tmp_path, progress=False, callback=crash_after_one)
    assert "generator" in load_checkpoint(tmp_path / CHECKPOINT_NAME)["ranks"][0]["method"]
    assert numbers(train_run(cfg, tmp_path, progress=False)) == numbers(whole)


def test_evaluation_uses_the_classifier_alone(automix_run):
    _, record, run_dir = automix_run
    model = build_model("cnn8", num_classes=10, in_channels=1, input_size=(8, 8))
    model.load_state_dict(load_checkpoint(run_dir / CHECKPOINT_NAME)["model"])
    loader = DeviceLoader.for_evaluation(load_dataset("digits"), 512)
    alone = evaluate_batches(model, loader, device=torch.device("cpu"))
    for key in ("acc", "nll", "ece"):
        assert record["final"][key] == pytest.approx(alone[key], abs=1e-6)


# ---- DDP

WORKER = textwrap.dedent(
    """
    import sys
    from mixlab.lab.train import RunConfig, train_run

    cfg = RunConfig(dataset="digits", epochs=1, batch_size=128, lr=0.1, method="automix")
    train_run(cfg, sys.argv[1], progress=False)
    """
)


def test_ddp_ranks_end_with_identical_mix_block_and_ema_model(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
        "--master_addr=127.0.0.1", f"--master_port={_free_port()}", str(script), str(tmp_path),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    state = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    rank0, rank1 = (r["method"] for r in state["ranks"])
    for part in ("mix_block", "ema_model"):  # parameters and batch-norm statistics
        assert rank0[part].keys() == rank1[part].keys()
        for key in rank0[part]:
            torch.testing.assert_close(rank0[part][key], rank1[part][key], rtol=0, atol=0)
    assert rank0["schedule"] == rank1["schedule"] == {"momentum": 1.0, "lam_loss_weight": 0.0}
    fresh = AutoMixStep()
    fresh.setup(small_model("cnn8"), num_classes=10, device=torch.device("cpu"))
    init = fresh.automix.mix_block.state_dict()
    assert not all(torch.equal(v, init[k]) for k, v in rank0["mix_block"].items())  # trained
    assert json.loads((tmp_path / RECORD_NAME).read_text())["world_size"] == 2


# ---- gallery and the bench


def test_load_automix_takes_the_trained_block_from_the_checkpoint(automix_run, tmp_path):
    cfg, _, run_dir = automix_run
    ds = load_dataset("digits")
    automix, where = load_automix(ds, cfg.resolved().method, run_dir)
    assert where.startswith("trained Mix Block of") and not automix.training
    saved = load_checkpoint(run_dir / CHECKPOINT_NAME)["ranks"][0]["method"]["mix_block"]
    for key, value in automix.mix_block.state_dict().items():
        assert torch.equal(value, saved[key])
    _, where = load_automix(ds, "automix", tmp_path / "nothing")
    assert where == f"untrained Mix Block (no checkpoint in {tmp_path / 'nothing'})"
    _, where = load_automix(ds, "automix")
    assert where == "untrained Mix Block (no run directory found)"
    _, where = load_automix(ds, "automix:alpha=1", run_dir)  # another method's checkpoint
    assert where.startswith("untrained Mix Block") and "is a run of 'automix'" in where


def test_gallery_draws_automix_rows_and_notes_inside_methods(automix_run, tmp_path):
    cfg, _, run_dir = automix_run
    path = draw_gallery(
        "digits",
        ["mixup", "manifoldmix", "automix"],
        tmp_path / "gallery.png",
        n=4,
        run_dirs={"automix": run_dir},
        lams=(0.2, 0.8),
    )
    assert path.stat().st_size > 0


def test_bench_with_model_aware_methods_end_to_end(tmp_path):
    out = tmp_path / "bench"
    cmd = [sys.executable, "-m", "mixlab.lab", "bench", "--dataset", "digits", "--model", "cnn8"]
    cmd += ["--methods", "none,mixup,manifoldmix,automix:alpha=2,feature_module=layer2"]
    cmd += ["--seeds", "1", "--epochs", "1", "--batch-size", "128", "--threads", "1"]
    proc = subprocess.run(cmd + ["--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "gallery.png not drawn" not in proc.stderr
    records, skipped = read_jsonl(out / "results.jsonl")
    assert skipped == 0 and [r["method"] for r in records] == [
        "none", "mixup", "manifoldmix", "automix:alpha=2,feature_module=layer2",
    ]  # fmt: skip
    for name in ("summary.md", "summary.json", "accuracy.png", "curves.png", "gallery.png"):
        assert (out / name).stat().st_size > 0, name
    run_dir = out / "runs" / "automix_alpha-2_feature_module-layer2" / "seed0"
    assert "mix_block" in load_checkpoint(run_dir / CHECKPOINT_NAME)["ranks"][0]["method"]
    _, where = load_automix(load_dataset("digits"), records[-1]["method"], run_dir)
    assert where.startswith("trained")
