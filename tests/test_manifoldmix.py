"""ManifoldMix: mixing at one hidden layer, through hooks that leave the model untouched."""

import copy

import pytest
import torch
from torch import nn

import mixlab
from mixlab.methods.manifoldmix import ManifoldMix

STAGES = ("layer1", "layer2")


class TinyNet(nn.Module):
    """stem -> layer1 -> layer2 -> head, like the lab's staged models."""

    def __init__(self, c_in: int = 2, width: int = 6, num_classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Conv2d(c_in, width, 3, padding=1)
        self.layer1 = nn.Sequential(nn.BatchNorm2d(width), nn.ReLU(), nn.Conv2d(width, width, 3))
        self.layer2 = nn.Sequential(nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))

    def forward(self, x):
        return self.head(self.layer2(self.layer1(self.stem(x))))


def _model_and_batch(batch: int = 6):
    torch.manual_seed(0)
    model = TinyNet()
    x = torch.randn(batch, 2, 8, 8)
    y = torch.randint(0, 5, (batch,))
    model(x)  # materialise the lazy head
    return model.eval(), x, y


def _manual_forward(model: TinyNet, x, layer: str, perm, lam):
    """The forward pass with the state after `layer` replaced by its MixUp, by hand."""

    def mix(h):
        w = lam.view(-1, *[1] * (h.ndim - 1))
        return w * h + (1 - w) * h[perm]

    h = mix(x) if layer == "" else x
    for name in ("stem", *STAGES):
        h = getattr(model, name)(h)
        if name == layer:
            h = mix(h)
    return model.head(h)


def _record(model: nn.Module, names):
    """Hooks recording each named module's input and (unreplaced) output."""
    seen, handles = {}, []
    for name in names:
        mod = model.get_submodule(name)
        handles.append(
            mod.register_forward_pre_hook(lambda m, a, n=name: seen.__setitem__(n + ":in", a[0]))
        )
        handles.append(
            mod.register_forward_hook(lambda m, a, o, n=name: seen.__setitem__(n + ":out", o))
        )
    return seen, handles


@pytest.mark.parametrize("layer", ["", "stem", "layer1", "layer2"])
def test_mixes_at_the_chosen_layer_only(layer):
    model, x, y = _model_and_batch()
    names = ("stem", *STAGES, "head")
    clean, handles = _record(model, names)
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    mm = ManifoldMix(model, layers=["", "stem", "layer1", "layer2"], alpha=1.0)
    params = mm.mixup.sample(x, generator=torch.Generator().manual_seed(3), spatial_dims=())
    seen, handles = _record(model, names)
    # Registered after the recorders, the mixing hook changes what the *next* module reads.
    with torch.no_grad():
        logits, target = mm(x, y, layer=layer, params=params)
    for h in handles:
        h.remove()
    order = ["", *names]
    pos = order.index(layer)
    # Everything up to and including the chosen module's own (pre-mixing) output is unchanged.
    for i, name in enumerate(names, start=1):
        if i <= pos:
            for key in (f"{name}:in", f"{name}:out"):
                torch.testing.assert_close(seen[key], clean[key], msg=f"{key} changed")
    # The module after the chosen layer reads exactly the MixUp of the clean state there.
    nxt = names[pos]  # the module after `layer` in `order`
    before = x if layer == "" else clean[f"{layer}:out"]
    w = params.lam.view(-1, 1, 1, 1)
    torch.testing.assert_close(seen[f"{nxt}:in"], w * before + (1 - w) * before[params.perm])
    with torch.no_grad():
        expected = _manual_forward(model, x, layer, params.perm, params.lam)
    torch.testing.assert_close(logits, expected)
    assert mm.last_layer == layer
    assert torch.equal(target.lam, params.lam)


def test_target_matches_the_lam_and_pairing_used():
    model, x, y = _model_and_batch(batch=8)
    mm = ManifoldMix(model, layers=["layer1"], alpha=0.7)
    logits, target = mm(x, y, generator=torch.Generator().manual_seed(11))
    replay = mm.mixup.sample(x, generator=torch.Generator().manual_seed(11), spatial_dims=())
    assert torch.equal(target.lam, replay.lam)
    assert torch.equal(target.y_a, y) and torch.equal(target.y_b, y[replay.perm])
    assert not torch.equal(replay.perm, torch.arange(8))
    with torch.no_grad():
        expected = _manual_forward(model, x, "layer1", replay.perm, replay.lam)
    torch.testing.assert_close(logits, expected)


def test_elem_mode_draws_one_lam_per_sample():
    model, x, y = _model_and_batch(batch=8)
    mm = ManifoldMix(model, layers=["layer1"], mode="elem")
    logits, target = mm(x, y, generator=torch.Generator().manual_seed(0))
    assert target.lam.shape == (8,) and target.lam.unique().numel() == 8


def test_hooks_are_gone_after_the_call_even_on_error():
    model, x, y = _model_and_batch()
    with torch.no_grad():
        plain = model(x)
        mm = ManifoldMix(model, layers=["layer1", "layer2"])
        mm(x, y)
        assert all(not m._forward_hooks for m in model.modules())
        torch.testing.assert_close(model(x), plain)
        with pytest.raises(RuntimeError):
            mm(torch.randn(6, 3, 8, 8), y, layer="layer2")  # wrong channel count
        assert all(not m._forward_hooks for m in model.modules())
        torch.testing.assert_close(model(x), plain)


def test_unknown_layer_names_raise_with_the_available_ones():
    model, _, _ = _model_and_batch()
    with pytest.raises(ValueError, match=r"layers: TinyNet has no submodule 'layer3'.*'layer1'"):
        ManifoldMix(model, layers=["", "layer3"])
    with pytest.raises(ValueError, match="layers"):
        ManifoldMix(model, layers="layer1")
    mm = ManifoldMix(model, layers=["layer1"])
    with pytest.raises(ValueError, match="layer: expected one of"):
        mm(torch.randn(4, 2, 8, 8), torch.zeros(4, dtype=torch.long), layer="layer2")


def test_layer_choice_covers_the_list_and_follows_the_generator():
    model, _, _ = _model_and_batch()
    mm = ManifoldMix(model, layers=["", "layer1", "layer2"])
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    picks = [mm.choose_layer(g1) for _ in range(60)]
    assert set(picks) == {"", "layer1", "layer2"}
    assert picks == [mm.choose_layer(g2) for _ in range(60)]


def test_gradients_reach_every_parameter_through_the_mixed_layer():
    model, x, y = _model_and_batch()
    model.train()
    mm = ManifoldMix(model, layers=["layer1"])
    logits, target = mm(x, y)
    mixlab.mixed_cross_entropy(logits, target).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_disabled_is_a_plain_forward_with_unmixed_targets():
    model, x, y = _model_and_batch()
    mm = ManifoldMix(model, layers=["layer1"])
    mm.enabled = False
    with torch.no_grad():
        logits, target = mm(x, y)
        torch.testing.assert_close(logits, model(x))
    assert torch.equal(target.lam, torch.ones(6))


def test_runs_on_a_lab_model_and_a_flat_mlp_stage():
    models = pytest.importorskip("mixlab.lab.models")
    cnn = models.build_model("cnn8", num_classes=10, in_channels=1, input_size=(8, 8))
    x, y = torch.randn(4, 1, 8, 8), torch.randint(0, 10, (4,))
    logits, target = ManifoldMix(cnn, layers=["", *cnn.stages])(x, y)
    assert logits.shape == (4, 10) and len(target) == 4
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    logits, _ = ManifoldMix(mlp, layers=["2"])(x, y)  # hidden state (B, 16)
    assert logits.shape == (4, 10)


def test_state_dict_carries_the_model_and_the_layer_generator():
    model, _, _ = _model_and_batch()
    a = ManifoldMix(model, layers=["", "layer1", "layer2"], seed=1)
    b = ManifoldMix(copy.deepcopy(model), layers=["", "layer1", "layer2"], seed=2)
    b.load_state_dict(a.state_dict())
    # The own generator (used when the call's generator is off-CPU) resumes where it was.
    assert torch.equal(a._own.get_state(), b._own.get_state())
    assert all(k.startswith("model.") or k == "_extra_state" for k in a.state_dict())
