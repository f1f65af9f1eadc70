"""Tests for mixlab.lab.models: shapes, named stages, hooks, gradients, parameter counts."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from mixlab.lab.models import (
    MODEL_NAMES,
    StagedNet,
    build_model,
    count_parameters,
    preact_resnet18,
    wrn28_10,
)

K = 7  # an odd class count, so a logits shape can't be confused with a channel count
B = 2

# name -> (in_channels, input_size, expected stage output shapes without the batch dim)
CASES: dict[str, tuple[int, tuple[int, ...], dict[str, tuple[int, ...]]]] = {
    "preact_resnet18": (
        3,
        (16, 16),
        {
            "layer1": (64, 16, 16),
            "layer2": (128, 8, 8),
            "layer3": (256, 4, 4),
            "layer4": (512, 2, 2),
        },
    ),
    "wrn28_10": (3, (8, 8), {"layer1": (160, 8, 8), "layer2": (320, 4, 4), "layer3": (640, 2, 2)}),
    "fast_resnet": (
        3,
        (16, 16),
        {"layer1": (128, 8, 8), "layer2": (256, 4, 4), "layer3": (512, 2, 2)},
    ),
    "cnn28": (1, (28, 28), {"layer1": (32, 14, 14), "layer2": (64, 7, 7), "layer3": (128, 3, 3)}),
    "cnn8": (1, (8, 8), {"layer1": (32, 4, 4), "layer2": (64, 2, 2)}),
    "cnn1d": (1, (40,), {"layer1": (32, 20), "layer2": (64, 10), "layer3": (128, 5)}),
    "mlp": (1, (28, 28), {"layer1": (512,), "layer2": (256,)}),
}


# Narrow versions of the big networks, for tests that check code paths rather than shapes: the
# same modules and forward, a fraction of the CPU time.
SLIM: dict[str, dict[str, object]] = {
    "preact_resnet18": {"width": 8},
    "wrn28_10": {"depth": 10, "widen_factor": 1},
    "fast_resnet": {"stem_width": 8, "widths": (16, 16, 32)},
}


def _build(name: str, seed: int = 0, slim: bool = False) -> tuple[StagedNet, torch.Tensor]:
    torch.manual_seed(seed)
    c, size, _ = CASES[name]
    kwargs = SLIM.get(name, {}) if slim else {}
    model = build_model(name, num_classes=K, in_channels=c, input_size=size, **kwargs)
    return model, torch.randn(B, c, *size)


def test_model_names_are_the_documented_ones() -> None:
    assert set(MODEL_NAMES) == set(CASES)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_logits_have_shape_batch_by_classes(name: str) -> None:
    model, x = _build(name)
    assert model(x).shape == (B, K)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_stages_are_named_submodules_in_forward_order(name: str) -> None:
    model, x = _build(name)
    assert isinstance(model.stages, tuple) and len(model.stages) >= 2
    module_names = [n for n, _ in model.named_modules()]
    assert all(s in module_names for s in model.stages)
    assert sorted(model.stages, key=module_names.index) == list(model.stages)
    called: list[str] = []
    for s in model.stages:
        model.get_submodule(s).register_forward_hook(lambda m, i, o, s=s: called.append(s))
    model(x)
    assert called == list(model.stages)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_return_features_gives_each_stage_output_with_expected_shape(name: str) -> None:
    model, x = _build(name)
    model.eval()
    logits, feats = model(x, return_features=True)
    expected = CASES[name][2]
    assert list(feats) == list(model.stages) == list(expected)
    assert {k: tuple(v.shape) for k, v in feats.items()} == {
        k: (B, *v) for k, v in expected.items()
    }
    assert model.stage_channels == tuple(v[0] for v in expected.values())
    torch.testing.assert_close(logits, model(x))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_hook_replacing_any_stage_output_changes_logits(name: str) -> None:
    model, x = _build(name)
    model.eval()
    base = model(x)
    for s in model.stages:
        # What ManifoldMix does: swap in a mixed hidden state (here, the other sample's).
        handle = model.get_submodule(s).register_forward_hook(lambda m, i, o: o.flip(0))
        logits, feats = model(x, return_features=True)
        handle.remove()
        assert not torch.allclose(logits, base), f"stage {s} hook had no effect"
        # Sample 0 now carries sample 1's state from this stage on, so its logits are sample 1's.
        torch.testing.assert_close(logits, base.flip(0), rtol=1e-4, atol=1e-5)
        assert feats[s].shape[0] == B


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_gradient_flows_to_input_and_every_parameter(name: str) -> None:
    model, x = _build(name)
    x.requires_grad_(True)
    model(x).logsumexp(dim=1).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0 and torch.isfinite(x.grad).all()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_compiles_to_one_graph(name: str) -> None:
    # The eager backend runs dynamo's capture only: fullgraph=True fails on any graph break
    # (data-dependent Python control flow) without paying for code generation.
    torch._dynamo.reset()
    model, x = _build(name, slim=True)
    model.eval()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    logits, feats = compiled(x, return_features=True)
    torch.testing.assert_close(logits, model(x))
    assert list(feats) == list(model.stages)


@pytest.mark.parametrize("name", [n for n in MODEL_NAMES if len(CASES[n][1]) == 2])
def test_channels_last_matches_contiguous(name: str) -> None:
    model, x = _build(name, slim=True)
    model.eval()
    expected = model(x)
    model = model.to(memory_format=torch.channels_last)
    got = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["cnn28", "cnn8", "cnn1d", "mlp"])
def test_bf16_autocast_gives_finite_logits(name: str) -> None:
    model, x = _build(name)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
    assert logits.shape == (B, K) and torch.isfinite(logits.float()).all()


def test_preact_resnet18_has_the_papers_parameter_count() -> None:
    # 11.17M for CIFAR-10 (the MixUp/CutMix/FMix PreAct-ResNet18, with its final BN).
    assert abs(count_parameters(preact_resnet18(10)) - 11.17e6) < 0.01e6
    assert (
        count_parameters(preact_resnet18(100)) - count_parameters(preact_resnet18(10)) == 90 * 513
    )


def test_wrn28_10_has_the_papers_parameter_count() -> None:
    # 36.5M in Zagoruyko & Komodakis (2016), Table 1; 36,479,194 exactly for 10 classes.
    assert count_parameters(wrn28_10(10)) == 36_479_194


def test_wrn_depth_and_width_are_configurable() -> None:
    model = build_model("wrn28_10", 10, depth=16, widen_factor=4, dropout=0.3)
    assert model.stages == ("layer1", "layer2", "layer3")
    assert model.stage_channels == (64, 128, 256)
    assert all(len(model.get_submodule(s)) == 2 for s in model.stages)
    assert any(isinstance(m, nn.Dropout) for m in model.modules())
    assert not any(isinstance(m, nn.Dropout) for m in wrn28_10(10, depth=10).modules())
    with pytest.raises(ValueError, match="depth"):
        build_model("wrn28_10", 10, depth=27)


def test_init_is_kaiming_normal_for_convs_and_identity_for_batchnorm() -> None:
    torch.manual_seed(0)
    model = preact_resnet18(10)
    conv = model.get_submodule("layer3")[0].conv1  # 128 -> 256, 3x3
    fan_out = conv.out_channels * 9
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.05)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)


def test_fast_resnet_options_set_widths_activation_and_logit_scale() -> None:
    torch.manual_seed(0)
    model = build_model(
        "fast_resnet", 10, widths=(64, 256, 256), res_blocks=(0, 0, 0), act="gelu", logit_scale=1.0
    )
    assert model.stage_channels == (64, 256, 256)
    assert any(isinstance(m, nn.GELU) for m in model.modules())
    default = build_model("fast_resnet", 10)
    assert default.head.scale == 0.125
    with pytest.raises(ValueError, match="act"):
        build_model("fast_resnet", 10, act="tanh")


def test_unknown_name_raises_value_error_listing_known_names() -> None:
    with pytest.raises(ValueError, match="resnet50") as info:
        build_model("resnet50", 10)
    assert all(n in str(info.value) for n in MODEL_NAMES)


@pytest.mark.parametrize(
    ("name", "size"),
    [("cnn8", (40,)), ("cnn28", (28,)), ("preact_resnet18", (8, 8, 8)), ("cnn1d", (28, 28))],
)
def test_input_of_the_wrong_rank_raises_value_error(name: str, size: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="input_size"):
        build_model(name, 10, in_channels=1, input_size=size)


@pytest.mark.parametrize(("name", "size"), [("cnn28", (4, 28)), ("fast_resnet", (4, 4))])
def test_input_too_small_to_pool_raises_value_error(name: str, size: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="input_size"):
        build_model(name, 10, input_size=size)


@pytest.mark.parametrize(("arg", "value"), [("num_classes", 0), ("in_channels", 0)])
def test_non_positive_sizes_raise_value_error(arg: str, value: int) -> None:
    kwargs = {"num_classes": 10, "in_channels": 3, arg: value}
    with pytest.raises(ValueError, match=arg):
        build_model("cnn8", **kwargs)


@settings(max_examples=15, deadline=None)
@given(
    name=st.sampled_from(["cnn8", "cnn1d", "mlp"]),
    c=st.integers(1, 3),
    side=st.integers(8, 20),
    other=st.integers(8, 20),
)
def test_small_models_take_any_large_enough_input(name: str, c: int, side: int, other: int) -> None:
    size = (side,) if name == "cnn1d" else (side, other)
    model = build_model(name, K, in_channels=c, input_size=size).eval()
    logits, feats = model(torch.randn(B, c, *size), return_features=True)
    assert logits.shape == (B, K)
    assert all(f.ndim == (2 if name == "mlp" else len(size) + 2) for f in feats.values())


def test_mlp_flattens_inputs_of_any_rank() -> None:
    for size in [(), (40,), (4, 4, 4)]:
        model = build_model("mlp", K, in_channels=2, input_size=size, hidden=(16, 8, 4))
        assert model.stages == ("layer1", "layer2", "layer3")
        _, feats = model(torch.randn(B, 2, *size), return_features=True)
        assert [tuple(f.shape) for f in feats.values()] == [(B, 16), (B, 8), (B, 4)]
