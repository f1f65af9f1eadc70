"""Method specs: parsing, the mixers they build, and errors that name what was wrong."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import mixlab
from mixlab.lab import methods
from mixlab.lab.methods import (
    METHODS,
    BaselineStep,
    MixerStep,
    TrainStep,
    build_mixer,
    build_train_step,
    format_spec,
    parse_spec,
    parse_value,
    register_method,
)


@pytest.mark.parametrize(
    ("spec", "cls"),
    [
        ("mixup", mixlab.MixUp),
        ("cutmix", mixlab.CutMix),
        ("fmix", mixlab.FMix),
        ("resizemix", mixlab.ResizeMix),
        ("saliencymix", mixlab.SaliencyMix),
        (" FMix ", mixlab.FMix),
    ],
)
def test_single_method_names_build_their_class(spec, cls):
    assert type(build_mixer(spec)) is cls


def test_none_is_the_baseline_without_a_mixer():
    assert build_mixer("none") is None
    assert build_mixer(" None ") is None
    assert isinstance(build_train_step("none"), BaselineStep)


def test_arguments_are_typed_and_passed_to_the_constructor():
    fmix = build_mixer("fmix:alpha=0.5,decay_power=3,reformulate=true,mode=elem")
    assert fmix.alpha == 0.5 and fmix.decay_power == 3
    assert fmix.reformulate is True and fmix.mode == "elem"
    resize = build_mixer("resizemix:scale=0.2-0.6")
    assert tuple(resize.scale) == (0.2, 0.6)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("3", 3),
        ("-2", -2),
        ("0.5", 0.5),
        ("1e-3", 1e-3),
        ("1e+3", 1e3),
        ("true", True),
        ("False", False),
        ("none", None),
        ("0.1-0.8", (0.1, 0.8)),
        ("1-2-3", (1, 2, 3)),
        ("elem", "elem"),
    ],
)
def test_values_parse_to_python_types(text, value):
    got = parse_value(text)
    assert got == value and type(got) is type(value)


def test_plus_alternates_and_bar_chooses_at_random():
    alt = build_mixer("fmix+mixup")
    assert isinstance(alt, mixlab.Alternate)
    assert [type(m) for m in alt.mixers] == [mixlab.FMix, mixlab.MixUp]
    choice = build_mixer("mixup:alpha=0.2 | cutmix")
    assert isinstance(choice, mixlab.RandomChoice)
    assert choice.mixers[0].alpha == 0.2 and isinstance(choice.mixers[1], mixlab.CutMix)


def test_float_with_plus_exponent_is_not_split_as_a_combination():
    op, terms = parse_spec("mixup:alpha=1e+0+cutmix")
    assert op == "+" and [t.name for t in terms] == ["mixup", "cutmix"]
    assert terms[0].kwargs == {"alpha": 1.0}


def test_format_spec_is_canonical():
    assert format_spec(" FMix: decay_power=3, alpha=1 ") == "fmix:alpha=1,decay_power=3"
    assert format_spec("resizemix:scale=0.1-0.8+mixup") == "resizemix:scale=0.1-0.8+mixup"
    assert format_spec("NONE") == "none"
    for spec in ("fmix:alpha=1,decay_power=3", "mixup|cutmix:alpha=0.5", "none"):
        assert format_spec(format_spec(spec)) == format_spec(spec)


def test_unknown_method_is_named_and_known_ones_listed():
    with pytest.raises(ValueError, match=r"unknown method 'fmixx'.*fmix.*mixup"):
        build_mixer("fmixx")
    with pytest.raises(ValueError, match=r"unknown method 'bogus'"):
        build_mixer("mixup+bogus")


def test_unknown_argument_is_named_and_valid_ones_listed():
    with pytest.raises(ValueError, match=r"unknown argument 'decay' for fmix.*decay_power"):
        build_mixer("fmix:decay=3")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "non-empty"),
        ("fmix+mixup|cutmix", r"cannot combine '\+' and '\|'"),
        ("fmix:alpha", "key=value"),
        ("fmix:alpha=", "key=value"),
        ("fmix:alpha=1,alpha=2", "given twice"),
        ("none+mixup", "'none' cannot be combined"),
        ("mixup:alpha=-1", "mixup"),  # the constructor's own check, with the spec in front
    ],
)
def test_malformed_specs_raise_value_error(spec, message):
    with pytest.raises(ValueError, match=message):
        build_mixer(spec)


def test_mixer_step_loss_is_mixed_cross_entropy_of_the_mixed_batch():
    step = build_train_step("mixup", label_smoothing=0.1)
    assert isinstance(step, MixerStep) and step.label_smoothing == 0.1
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x, y = torch.randn(8, 1, 4, 4), torch.randint(0, 3, (8,))
    loss = step.loss(model, x, y, torch.Generator().manual_seed(1))
    x_mixed, target = step.mixer(x, y, generator=torch.Generator().manual_seed(1))
    want = mixlab.mixed_cross_entropy(model(x_mixed), target, label_smoothing=0.1)
    torch.testing.assert_close(loss, want)


def test_alternate_position_survives_state_dict_round_trip():
    a, b = build_train_step("fmix+mixup"), build_train_step("fmix+mixup")
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x, y = torch.randn(4, 1, 4, 4), torch.randint(0, 3, (4,))
    a.loss(model, x, y, torch.Generator())
    b.load_state_dict(a.state_dict())
    assert b.mixer.step == a.mixer.step == 1


def test_random_choice_own_generator_is_seeded_and_checkpointed():
    a = build_train_step("mixup|cutmix", seed=5)
    b = build_train_step("mixup|cutmix", seed=5)
    assert torch.equal(a.state_dict()["generators"][0], b.state_dict()["generators"][0])
    state = a.state_dict()
    c = build_train_step("mixup|cutmix", seed=6)
    c.load_state_dict(state)
    assert torch.equal(c.state_dict()["generators"][0], state["generators"][0])


class _ToyModelAware(TrainStep):
    """A stand-in for ManifoldMix/AutoMix: scales the loss, keeps a counter as state."""

    def __init__(self, weight: float = 1.0) -> None:
        self.weight, self.calls = weight, 0

    def loss(self, model, x, y, generator):
        self.calls += 1
        return self.weight * nn.functional.cross_entropy(model(x), y)

    def state_dict(self):
        return {"calls": self.calls}

    def load_state_dict(self, state):
        self.calls = state["calls"]


def test_registered_model_aware_method_builds_as_its_own_train_step(monkeypatch):
    monkeypatch.setitem(methods.METHODS, "toy", _ToyModelAware)
    step = build_train_step("toy:weight=2", label_smoothing=0.0)
    assert isinstance(step, _ToyModelAware) and step.weight == 2.0
    with pytest.raises(ValueError, match="model-aware"):
        build_mixer("toy")
    with pytest.raises(ValueError, match="cannot be combined"):
        build_train_step("toy+mixup")
    with pytest.raises(ValueError, match="unknown argument 'w'"):
        build_train_step("toy:w=2")


def test_register_method_refuses_duplicates_and_bad_names():
    with pytest.raises(ValueError, match="already registered"):
        register_method("mixup", mixlab.MixUp)
    with pytest.raises(ValueError, match="invalid method name"):
        register_method("none", mixlab.MixUp)
    with pytest.raises(ValueError, match="already registered"):
        register_method("automix", methods.AutoMixStep)
    assert METHODS["manifoldmix"] is methods.ManifoldMixStep
