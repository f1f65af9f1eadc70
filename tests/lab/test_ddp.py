"""Data-parallel training with 2 CPU processes (gloo) started by torchrun."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

from mixlab.lab.checkpoint import CHECKPOINT_NAME, load_checkpoint
from mixlab.lab.data import DeviceLoader, load_dataset
from mixlab.lab.metrics import evaluate_batches
from mixlab.lab.models import build_model

WORKER = textwrap.dedent(
    """
    import json, os, sys
    import torch
    from mixlab.lab.train import RunConfig, train_run

    out, crash = sys.argv[1], sys.argv[2:] == ["crash"]
    cfg = RunConfig(dataset="digits", epochs=2, batch_size=128, lr=0.1, method="fmix+mixup")
    models = {}

    def callback(event):
        if event["event"] == "epoch":
            models["m"] = event["model"]
            if crash:
                raise SystemExit(3)  # every rank stops after the first epoch's checkpoint

    record = train_run(cfg, os.path.join(out, "run"), progress=False, callback=callback)
    rank = int(os.environ["RANK"])
    torch.save(models["m"].state_dict(), os.path.join(out, f"weights{rank}.pt"))
    with open(os.path.join(out, f"record{rank}.json"), "w") as f:
        json.dump(record, f)
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(out, *args: str) -> subprocess.CompletedProcess:
    """Run the worker on 2 CPU processes (gloo over loopback, a free port)."""
    script = out / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
        "--master_addr=127.0.0.1", f"--master_port={_free_port()}", str(script), str(out), *args,
    ]  # fmt: skip
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    proc = torchrun(out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def numbers(record: dict) -> dict:
    drop = {"epoch_time_s", "eval_time_s", "train_time_s", "total_time_s", "run_dir"}
    out = {k: v for k, v in record.items() if k not in drop}
    out["history"] = [{k: v for k, v in e.items() if k not in drop} for e in record["history"]]
    return out


def test_both_ranks_end_with_identical_weights(ddp_run):
    w0 = torch.load(ddp_run / "weights0.pt")
    w1 = torch.load(ddp_run / "weights1.pt")
    assert w0.keys() == w1.keys()
    for key in w0:
        torch.testing.assert_close(w0[key], w1[key], rtol=0, atol=0, msg=key)


def test_ddp_metrics_equal_single_process_evaluation_of_the_same_weights(ddp_run):
    record = json.loads((ddp_run / "record0.json").read_text())
    assert record["world_size"] == 2
    other = json.loads((ddp_run / "record1.json").read_text())
    assert numbers(other) == numbers(record)
    assert record["final"]["acc"] > 0.5
    ds = load_dataset("digits")
    model = build_model("cnn8", num_classes=10, in_channels=1, input_size=(8, 8))
    model.load_state_dict(load_checkpoint(ddp_run / "run" / CHECKPOINT_NAME)["model"])
    loader = DeviceLoader.for_evaluation(ds, 100)
    single = evaluate_batches(model, loader, device=torch.device("cpu"))
    for key in ("acc", "nll", "ece"):
        assert record["final"][key] == pytest.approx(single[key], abs=1e-6)


def test_checkpoint_holds_every_ranks_generator_state(ddp_run):
    state = load_checkpoint(ddp_run / "run" / CHECKPOINT_NAME)
    assert state["world_size"] == 2 and len(state["ranks"]) == 2
    assert not torch.equal(state["ranks"][0]["mix_gen"], state["ranks"][1]["mix_gen"])


@pytest.mark.slow
def test_ddp_resume_after_a_crash_gives_the_uninterrupted_record(ddp_run, tmp_path):
    crashed = torchrun(tmp_path, "crash")
    assert crashed.returncode != 0
    assert load_checkpoint(tmp_path / "run" / CHECKPOINT_NAME)["epochs_done"] == 1
    proc = torchrun(tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    resumed = json.loads((tmp_path / "record0.json").read_text())
    whole = json.loads((ddp_run / "record0.json").read_text())
    assert numbers(resumed) == numbers(whole)
