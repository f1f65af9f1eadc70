"""Policies (Alternate, RandomChoice) and the DataLoader collate function."""

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import mixlab


class Recorder:
    def __init__(self, name):
        self.name, self.calls = name, 0

    def __call__(self, x, y, *, generator=None, dense=None):
        self.calls += 1
        return x, mixlab.MixedTarget.unmixed(y)


def test_alternate_switches_method_every_call_and_resumes():
    a, b = Recorder("a"), Recorder("b")
    policy = mixlab.Alternate([a, b])
    x, y = torch.randn(4, 3, 8, 8), torch.arange(4)
    for _ in range(5):
        policy(x, y)
    assert (a.calls, b.calls) == (3, 2)
    state = policy.state_dict()
    resumed = mixlab.Alternate([a, b])
    resumed.load_state_dict(state)
    resumed(x, y)
    assert b.calls == 3


def test_fmix_mixup_hybrid_alternates_real_methods():
    policy = mixlab.Alternate([mixlab.FMix(), mixlab.MixUp()])
    x = torch.arange(1, 5).float().view(4, 1, 1, 1).expand(4, 1, 16, 16).contiguous()
    x1, _ = policy(x, torch.arange(4))
    x2, _ = policy(x, torch.arange(4))
    assert set(x1.unique().tolist()) <= {1.0, 2.0, 3.0, 4.0}  # binary mask: no blends
    assert x2[0].unique().numel() == 1  # MixUp: one blended value per sample


def test_random_choice_follows_weights_and_seed():
    a, b = Recorder("a"), Recorder("b")
    policy = mixlab.RandomChoice([a, b], p=[0.8, 0.2])
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 1, 4, 4), torch.arange(2)
    for _ in range(2000):
        policy(x, y, generator=g)
    assert 0.76 < a.calls / 2000 < 0.84
    picks = []
    for _ in range(2):
        g.manual_seed(3)
        picks.append([policy.choose(g) for _ in range(20)])
    assert picks[0] == picks[1]


def test_policies_can_be_disabled():
    policy = mixlab.RandomChoice([mixlab.CutMix(), mixlab.MixUp()])
    policy.enabled = False
    x = torch.randn(4, 3, 8, 8)
    x_mixed, target = policy(x, torch.arange(4))
    assert x_mixed is x and target.lam.eq(1).all()


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: mixlab.Alternate([]), "mixers"),
        (lambda: mixlab.RandomChoice([mixlab.MixUp()], p=[0.5, 0.5]), "p:"),
        (lambda: mixlab.RandomChoice([mixlab.MixUp(), mixlab.CutMix()], p=[-1, 2]), "p:"),
    ],
)
def test_bad_policies_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_collate_mixes_each_batch_in_a_dataloader():
    data = TensorDataset(torch.randn(20, 3, 8, 8), torch.randint(0, 4, (20,)))
    loader = DataLoader(data, batch_size=8, collate_fn=mixlab.collate(mixlab.CutMix(mode="elem")))
    batches = list(loader)
    assert len(batches) == 3
    x, target = batches[0]
    assert x.shape == (8, 3, 8, 8) and isinstance(target, mixlab.MixedTarget)
    loss = mixlab.mixed_cross_entropy(torch.randn(8, 4), target)
    assert torch.isfinite(loss)


def test_collate_refuses_batches_that_are_not_pairs():
    fn = mixlab.collate(mixlab.MixUp(), collate_fn=lambda s: torch.stack(s))
    with pytest.raises(ValueError, match="collate_fn"):
        fn([torch.randn(3), torch.randn(3)])
