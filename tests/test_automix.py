"""AutoMix: the Mix Block's masks, exact gradient routing, the EMA, and training on digits."""

import copy

import pytest
import torch
from torch import nn

from mixlab.methods.automix import AutoMix, MixBlock, ema_momentum

EPS = 0.1


class TinyCNN(nn.Module):
    """conv stages like the lab's small CNNs: (B, C, 8, 8) -> layer1 (4x4) -> layer2 (2x2)."""

    def __init__(self, c_in: int = 1, width: int = 16, num_classes: int = 10, dims: int = 2):
        super().__init__()
        conv, bn, pool = {
            1: (nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d),
            2: (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d),
        }[dims]
        self.layer1 = nn.Sequential(conv(c_in, width, 3, padding=1), bn(width), nn.ReLU(), pool(2))
        self.layer2 = nn.Sequential(
            conv(width, 2 * width, 3, padding=1), bn(2 * width), nn.ReLU(), pool(2)
        )
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        h = self.layer2(self.layer1(x))
        return self.head(h.flatten(2).mean(2))


@pytest.fixture
def one_thread():
    # These tests run many tiny ops: on a busy 2-core machine one thread is several times faster.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def digits():
    datasets = pytest.importorskip("sklearn.datasets")
    d = datasets.load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = (x - x.mean()) / x.std()
    y = torch.tensor(d.target)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    return x[order[:1400]], y[order[:1400]], x[order[1400:]], y[order[1400:]]


def _automix(**kwargs):
    torch.manual_seed(0)
    return AutoMix(TinyCNN(), feature_module="layer1", num_classes=10, **kwargs)


def _batch(batch: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 1, 8, 8, generator=g), torch.randint(0, 10, (batch,), generator=g)


def _train(automix, x, y, steps, *, mix_block_lr=0.1, seed=0, batch=64):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(
        automix.parameters_to_optimize(mix_block_lr=mix_block_lr),
        lr=0.1,
        momentum=0.9,
        nesterov=True,
        weight_decay=5e-4,
    )
    automix.train()
    for step in range(steps):
        idx = torch.randint(len(x), (batch,), generator=g)
        loss, _ = automix.training_step(x[idx], y[idx], generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        automix.momentum_update(step + 1, steps)


def _mask_means(automix, x, y, lams):
    automix.eval()
    means = []
    for lam in lams:
        g = torch.Generator().manual_seed(1)
        _, _, mask = automix.mix(x, y, lam, generator=g)
        means.append(mask.flatten(1).mean(1))
    automix.train()
    return torch.stack(means)  # (len(lams), B)


# --- the Mix Block's masks -----------------------------------------------------------


@pytest.mark.parametrize(
    ("dims", "size", "upsample"),
    [(2, (8, 8), "linear"), (2, (12, 10), "nearest"), (1, (16,), "linear")],
)
def test_mask_is_in_unit_interval_at_the_input_size(dims, size, upsample):
    torch.manual_seed(0)
    model = TinyCNN(c_in=3, dims=dims)
    automix = AutoMix(model, "layer1", mix_block=MixBlock(16, upsample=upsample))
    x, y = torch.randn(5, 3, *size) * 4, torch.randint(0, 10, (5,))
    for lam in (0.0, 0.3, 1.0):
        x_mixed, target, mask = automix.mix(x, y, lam)
        assert mask.shape == (5, *size) and mask.dtype == torch.float32
        assert (mask >= 0).all() and (mask <= 1).all()
        assert torch.equal(target.lam, torch.full((5,), lam))
    loss, parts = automix.training_step(x, y)
    assert torch.isfinite(loss) and set(parts) == {"ce", "mix_q", "mix_k", "lam_loss", "mask_gap"}


def test_mix_applies_the_mask_to_the_pair():
    automix = _automix()
    x, y = _batch()
    perm = torch.arange(8).roll(1)
    x_mixed, target, mask = automix.mix(x, y, torch.linspace(0.1, 0.9, 8), perm=perm)
    m = mask.unsqueeze(1)
    torch.testing.assert_close(x_mixed, m * x + (1 - m) * x[perm])
    assert torch.equal(target.y_b, y[perm])
    torch.testing.assert_close(target.lam, torch.linspace(0.1, 0.9, 8))


def test_masks_depend_on_the_pair_and_on_lam():
    automix = _automix()
    x, y = _batch()
    _, _, low = automix.mix(x, y, 0.2, generator=torch.Generator().manual_seed(0))
    _, _, high = automix.mix(x, y, 0.8, generator=torch.Generator().manual_seed(0))
    assert (high.flatten(1).mean(1) > low.flatten(1).mean(1) + 0.3).all()  # calibrated init
    assert low.flatten(1).std(1).min() > 0  # not one constant per mask


# --- gradient routing ----------------------------------------------------------------


def _grads(loss, params):
    return torch.autograd.grad(loss, list(params), retain_graph=True, allow_unused=True)


def test_no_gradient_from_the_classification_branch_reaches_the_mix_block():
    automix = _automix()
    x, y = _batch()
    terms = automix.losses(x, y, generator=torch.Generator().manual_seed(0))
    q_branch = terms["ce"] + terms["mix_q"]
    assert all(g is None for g in _grads(q_branch, automix.mix_block.parameters()))
    assert all(g is not None for g in _grads(q_branch, automix.model.parameters()))


def test_no_gradient_from_the_generation_branch_reaches_q_or_k():
    automix = _automix(lam_margin=0.0)  # so the lam loss is active at once
    x, y = _batch()
    terms = automix.losses(x, y, generator=torch.Generator().manual_seed(0))
    k_branch = terms["mix_k"] + terms["lam_loss"]
    assert terms["lam_loss"] > 0
    assert all(g is None for g in _grads(k_branch, automix.model.parameters()))
    assert not any(p.requires_grad for p in automix.ema_model.parameters())
    block = _grads(k_branch, automix.mix_block.parameters())
    assert all(g is not None and g.abs().sum() > 0 for g in block)


def test_training_step_is_the_sum_of_its_terms_and_leaves_k_without_grads():
    automix = _automix(clean_weight=0.5)
    x, y = _batch()
    terms = automix.losses(x, y, generator=torch.Generator().manual_seed(4))
    loss, parts = automix.training_step(x, y, generator=torch.Generator().manual_seed(4))
    expected = 0.5 * terms["ce"] + terms["mix_q"] + terms["mix_k"] + terms["lam_loss"]
    torch.testing.assert_close(loss, expected)
    assert all(not v.requires_grad for v in parts.values())
    loss.backward()
    assert all(p.grad is None for p in automix.ema_model.parameters())
    assert all(p.grad is not None for p in automix.parameters_to_optimize())


def test_clean_weight_zero_skips_the_clean_pass():
    automix = _automix(clean_weight=0.0)
    loss, parts = automix.training_step(*_batch())
    assert "ce" not in parts and torch.isfinite(loss)


# --- the momentum pipeline -----------------------------------------------------------


def test_ema_update_matches_its_formula():
    automix = _automix()
    with torch.no_grad():
        for p in automix.model.parameters():
            p.add_(torch.randn_like(p))
    k_before = copy.deepcopy(automix.ema_model.state_dict())
    m = automix.momentum_update(30, 100)
    assert m == pytest.approx(ema_momentum(30, 100, 0.999)) and automix.momentum == m
    q = dict(automix.model.named_parameters())
    for name, p in automix.ema_model.named_parameters():
        torch.testing.assert_close(p, m * k_before[name] + (1 - m) * q[name])
    for name, b in automix.ema_model.named_buffers():  # BN statistics are k's own
        assert torch.equal(b, k_before[name])


def test_momentum_schedule_hits_its_ends():
    assert ema_momentum(0, 500) == pytest.approx(0.999, abs=1e-12)
    assert ema_momentum(500, 500) == 1.0
    ms = [ema_momentum(s, 500) for s in range(0, 501, 25)]
    assert ms == sorted(ms)
    automix = _automix()
    with torch.no_grad():
        for p in automix.model.parameters():
            p.add_(1.0)
    k_before = copy.deepcopy(automix.ema_model.state_dict())
    assert automix.momentum_update(0, 10) == pytest.approx(0.999)
    assert automix.lam_loss_weight == pytest.approx(0.1)
    k_mid = copy.deepcopy(automix.ema_model.state_dict())
    assert automix.momentum_update(10, 10) == 1.0 and automix.lam_loss_weight == 0.0
    for name, v in automix.ema_model.state_dict().items():
        assert torch.equal(v, k_mid[name])  # m = 1: k stays put
    assert not torch.equal(k_mid["layer1.0.weight"], k_before["layer1.0.weight"])


def test_state_dict_covers_q_k_the_mix_block_and_the_schedules():
    a = _automix()
    a.momentum_update(3, 10)
    state = a.state_dict()
    assert any(k.startswith("ema_model.") for k in state)
    assert any(k.startswith("mix_block.") for k in state)
    b = AutoMix(TinyCNN(), feature_module="layer1", num_classes=10)
    b.load_state_dict(state)
    assert b.momentum == a.momentum and b.lam_loss_weight == a.lam_loss_weight
    x, y = _batch()
    for net in ("model", "ema_model", "mix_block"):
        for (n, p), (_, p2) in zip(
            getattr(a, net).state_dict().items(),
            getattr(b, net).state_dict().items(),
            strict=True,
        ):
            assert torch.equal(p, p2), n
    a.eval(), b.eval()
    torch.testing.assert_close(a(x), b(x))


# --- errors --------------------------------------------------------------------------


def test_unknown_feature_module_lists_available_names():
    with pytest.raises(ValueError, match=r"feature_module: TinyCNN has no submodule 'layer3'"):
        AutoMix(TinyCNN(), feature_module="layer3")
    with pytest.raises(ValueError, match="'layer1', 'layer2', 'head'"):
        AutoMix(TinyCNN(), feature_module="layer3")


def test_feature_module_without_a_feature_map_is_refused():
    automix = AutoMix(TinyCNN(), feature_module="head", feature_channels=10)
    with pytest.raises(ValueError, match=r"feature_module: 'head' must output a feature map"):
        automix.training_step(*_batch())
    wrong_rank = AutoMix(TinyCNN(dims=1), feature_module="layer1")  # 1D maps for 2D input
    with pytest.raises((ValueError, RuntimeError)):
        wrong_rank.training_step(*_batch())


def test_channel_count_is_read_from_the_feature_module():
    class Block(nn.Module):  # like a torchvision BasicBlock: no stage_channels anywhere
        def __init__(self, c_in, c_out):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out)

        def forward(self, x):
            return self.bn1(self.conv1(x)).relu()

    net = nn.Sequential()
    net.add_module("layer1", nn.Sequential(Block(1, 4), Block(4, 12)))
    net.add_module("pool", nn.AdaptiveAvgPool2d(1))
    net.add_module("flat", nn.Flatten())
    net.add_module("fc", nn.Linear(12, 10))
    automix = AutoMix(net, feature_module="layer1")
    assert automix.mix_block.in_channels == 12
    loss, _ = automix.training_step(*_batch())
    assert torch.isfinite(loss)


def test_runs_on_a_lab_model():
    models = pytest.importorskip("mixlab.lab.models")
    cnn = models.build_model("cnn8", num_classes=10, in_channels=1, input_size=(8, 8))
    automix = AutoMix(cnn, feature_module=cnn.stages[0], num_classes=10)
    assert automix.mix_block.in_channels == cnn.stage_channels[0]
    loss, _ = automix.training_step(*_batch())
    loss.backward()
    assert torch.isfinite(loss)


# --- training on digits --------------------------------------------------------------


def test_lam_loss_makes_the_mask_mean_track_lam(digits, one_thread):
    x, y, x_test, y_test = digits
    torch.manual_seed(0)
    automix = AutoMix(
        TinyCNN(width=8),
        feature_module="layer1",
        num_classes=10,
        mode="elem",  # a lam per sample: many ratios per step for the lam loss to fit
        lam_loss_weight=(1.0, 1.0),
        mix_block=MixBlock(8, calibrated_init=False),
    )
    lams = torch.tensor([0.2, 0.5, 0.8])
    before = _mask_means(automix, x_test[:64], y_test[:64], lams.tolist()).mean(1)
    assert ((before - lams).abs() > EPS).any()  # uncalibrated: ~0.5 whatever lam is
    _train(automix, x, y, steps=120, batch=32)
    after = _mask_means(automix, x_test[:64], y_test[:64], lams.tolist()).mean(1)
    # The hinge stops pulling at eps on the training batches; held-out means may sit just past it.
    assert ((after - lams).abs() <= EPS + 0.03).all(), after


def _check_trained(automix, x_test, y_test, min_acc):
    automix.eval()
    with torch.no_grad():
        acc = (automix.model(x_test).argmax(1) == y_test).float().mean()
    assert acc > min_acc, f"accuracy {acc:.3f}"
    lams = [0.1, 0.3, 0.5, 0.7, 0.9]
    means = _mask_means(automix, x_test[:128], y_test[:128], lams)  # (5, B)
    avg = means.mean(1)
    assert (avg.diff() > 0.05).all(), avg  # spread with lam, in order
    assert avg[-1] - avg[0] > 0.4, avg  # not stuck at 0.5
    assert 0.02 < means.min() and means.max() < 0.98, avg  # not all 0 or 1
    return means


def test_automix_trains_on_digits_without_collapse(digits, one_thread):
    x, y, x_test, y_test = digits
    automix = _automix()
    _train(automix, x, y, steps=80, batch=32)
    _check_trained(automix, x_test, y_test, min_acc=0.5)


@pytest.mark.slow
def test_automix_trains_on_digits_to_high_accuracy_with_spatial_masks(digits, one_thread):
    x, y, x_test, y_test = digits
    automix = _automix()
    _train(automix, x, y, steps=1000)
    _check_trained(automix, x_test, y_test, min_acc=0.93)
    automix.eval()
    _, _, mask = automix.mix(x_test[:128], y_test[:128], 0.5)
    assert mask.flatten(1).std(1).mean() > 0.01  # the masks have learned spatial structure
