"""Sample queues and training-time CFG weights."""

import pytest
import torch

from drifting_policy.image.queue import ClassQueue, GlobalQueue, cfg_negative_weight, sample_cfg_alpha


def test_class_queue_keeps_the_most_recent_samples_of_each_class():
    q = ClassQueue(3, 4, (1,))
    y = torch.tensor([0, 0, 1, 0, 0, 0, 2, 1, 1, 0])
    q.push(torch.arange(10.0).unsqueeze(1), y)
    assert q.count.tolist() == [4, 3, 1]
    assert sorted(q.buffer[0, :, 0].tolist()) == [3.0, 4.0, 5.0, 9.0]  # class 0 got 0, 1, 3, 4, 5, 9: last four kept
    q.push(torch.tensor([[20.0], [21.0]]), torch.tensor([0, 0]))  # overwrites the two oldest (3 and 4)
    assert sorted(q.buffer[0, :, 0].tolist()) == [5.0, 9.0, 20.0, 21.0]


def test_class_queue_samples_distinct_members_of_the_requested_class():
    q = ClassQueue(5, 16, (2,))
    for _ in range(4):
        y = torch.randint(0, 5, (64,))
        q.push(y.float().unsqueeze(1).expand(-1, 2) + torch.rand(64, 1) * 0.1, y)
    out = q.sample(torch.tensor([3, 1, 3]), 8, torch.Generator().manual_seed(0))
    assert out.shape == (3, 8, 2)
    assert torch.equal(out[..., 0].floor(), torch.tensor([3.0, 1.0, 3.0]).view(3, 1).expand(3, 8))
    assert len(set(out[0, :, 0].tolist())) == 8  # without replacement


def test_sampling_an_underfilled_queue_is_refused():
    q = ClassQueue(2, 8, (1,))
    q.push(torch.zeros(3, 1), torch.tensor([0, 0, 1]))
    with pytest.raises(ValueError, match="fill it first"):
        q.sample(torch.tensor([0, 1]), 2)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        q.push(torch.zeros(1, 1), torch.tensor([2]))


def test_global_queue_is_one_ring_of_any_class_with_independent_group_draws():
    q = GlobalQueue(10, (1,))
    q.push(torch.arange(25.0).unsqueeze(1))
    assert sorted(q.buffer[0, :, 0].tolist()) == list(range(15, 25))
    out = q.sample_groups(6, 5, torch.Generator().manual_seed(0))
    assert out.shape == (6, 5, 1) and out.min() >= 15
    assert all(len(set(row.tolist())) == 5 for row in out[..., 0])
    assert not all(torch.equal(out[0], out[i]) for i in range(1, 6))


def test_queue_state_round_trips_and_uint8_storage_is_exact_for_pixels():
    q = ClassQueue(2, 4, (3,), torch.uint8)
    pix = torch.randint(0, 256, (6, 3)).float() / 127.5 - 1
    q.push(pix, torch.tensor([0, 1, 0, 1, 0, 1]))
    r = ClassQueue(2, 4, (3,), torch.uint8)
    r.load_state_dict(q.state_dict("q."), "q.")
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a, b = q.sample(torch.tensor([0, 1]), 3, g1), r.sample(torch.tensor([0, 1]), 3, g2)
    assert torch.equal(a, b)
    assert min((pix - v).abs().sum(-1).min().item() for v in a.reshape(-1, 3)) < 1e-6


def test_cfg_weight_formula():
    w = cfg_negative_weight(torch.tensor([1.0, 2.0, 4.0]), n_gen=64, n_unc=16)
    torch.testing.assert_close(w, torch.tensor([0.0, 63 / 16, 3 * 63 / 16]))
    with pytest.raises(ValueError):
        cfg_negative_weight(torch.tensor([2.0]), 8, 0)


@pytest.mark.parametrize("p", [3.0, 5.0])
def test_cfg_scale_follows_the_power_law_on_1_to_4(p):
    a = sample_cfg_alpha(200_000, p, generator=torch.Generator().manual_seed(0)).double()
    assert a.min() >= 1.0 and a.max() <= 4.0
    expected_mean = ((1 - 4 ** (2 - p)) / (p - 2)) / ((1 - 4 ** (1 - p)) / (p - 1))
    assert abs(a.mean().item() - expected_mean) < 5e-3
    # P(alpha < 2) = (1 - 2^(1-p)) / (1 - 4^(1-p))
    assert abs((a < 2).double().mean().item() - (1 - 2 ** (1 - p)) / (1 - 4 ** (1 - p))) < 5e-3
