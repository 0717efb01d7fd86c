"""Specification of the drifting field (docs/notes/field.md, section 1)."""

import pytest
import torch

from drifting_policy.field import drift_field, drifting_loss


@pytest.fixture
def sets():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 6, 4, generator=g)
    pos = torch.randn(3, 5, 4, generator=g) + 1.0
    neg = torch.randn(3, 7, 4, generator=g) - 1.0
    return x, pos, neg


def test_raw_field_flips_sign_when_positives_and_negatives_swap(sets):
    x, pos, neg = sets
    v = drift_field(x, pos, neg)
    assert v.abs().mean() > 1e-2
    torch.testing.assert_close(drift_field(x, neg, pos), -v, atol=1e-5, rtol=1e-4)


def test_raw_field_is_zero_when_positives_equal_negatives(sets):
    x, pos, _ = sets
    assert drift_field(x, pos, pos.clone()).abs().max() < 1e-5


def test_gradient_reaches_only_the_generated_samples(sets):
    x, pos, neg = sets
    gen, pos, neg = x.clone().requires_grad_(), pos.clone().requires_grad_(), neg.clone().requires_grad_()
    loss, _ = drifting_loss(gen, pos, neg)
    loss.sum().backward()
    assert gen.grad.abs().sum() > 0
    assert pos.grad is None or pos.grad.abs().sum() == 0
    assert neg.grad is None or neg.grad.abs().sum() == 0


@pytest.mark.parametrize(
    "make",
    [
        lambda: (torch.randn(4, 1, 3), torch.randn(4, 2, 3)),  # Ng = 1
        lambda: (torch.ones(4, 8, 3), torch.ones(4, 2, 3)),  # every point identical
        lambda: (torch.randn(4, 8, 3) * 1e-4, torch.randn(4, 2, 3) * 1e-4),
        lambda: (torch.randn(4, 8, 3) * 1e4, torch.randn(4, 2, 3) * 1e4),
    ],
    ids=["single_generated", "all_identical", "tiny_coordinates", "huge_coordinates"],
)
def test_degenerate_inputs_give_finite_loss_and_gradient(make):
    gen, pos = make()
    gen.requires_grad_()
    loss, info = drifting_loss(gen, pos)
    loss.sum().backward()
    assert torch.isfinite(loss).all()
    assert torch.isfinite(gen.grad).all()
    assert all(torch.isfinite(v) for v in info.values())


@pytest.mark.parametrize("factor", [0.01, 7.0, 300.0])
def test_loss_is_invariant_to_a_global_rescaling(sets, factor):
    x, pos, neg = sets
    base, _ = drifting_loss(x, pos, neg)
    scaled, _ = drifting_loss(x * factor, pos * factor, neg * factor)
    torch.testing.assert_close(scaled, base, rtol=1e-3, atol=1e-4)


def test_single_sample_drifts_toward_its_single_positive():
    gen = torch.tensor([[[0.0, 0.0]]], requires_grad=True)
    pos = torch.tensor([[[3.0, 4.0]]])
    loss, _ = drifting_loss(gen, pos)
    loss.sum().backward()
    descent = -gen.grad / gen.grad.norm()
    assert torch.allclose(descent, pos / 5.0, atol=1e-5)


def test_zero_weight_removes_a_target(sets):
    x, pos, neg = sets
    far = torch.full((3, 1, 4), 50.0)
    without = drift_field(x, pos, neg)
    zero = drift_field(x, torch.cat([pos, far], 1), neg, weight_pos=torch.cat([torch.ones(3, 5), torch.zeros(3, 1)], 1))
    one = drift_field(x, torch.cat([pos, far], 1), neg)
    torch.testing.assert_close(zero, without, atol=1e-5, rtol=1e-4)
    assert (one - without).abs().max() > 1e-2  # the same target with weight 1 does move the field

    gen = x.clone()
    loss_without, _ = drifting_loss(gen, pos, neg)
    loss_zero, _ = drifting_loss(gen, pos, torch.cat([neg, far], 1), weight_neg=torch.cat([torch.ones(3, 7), torch.zeros(3, 1)], 1))
    torch.testing.assert_close(loss_zero, loss_without, atol=1e-5, rtol=1e-4)


def test_groups_do_not_interact(sets):
    x, pos, neg = sets
    # Translating each group by its own offset keeps every within-group distance (and so the global scale);
    # if kernels mixed groups, the field would change.
    offset = torch.tensor([0.0, 3.0, -5.0]).view(3, 1, 1)
    torch.testing.assert_close(drift_field(x + offset, pos + offset, neg + offset), drift_field(x, pos, neg), atol=1e-4, rtol=1e-3)


def test_info_reports_scale_and_force_rms_per_temperature(sets):
    x, pos, neg = sets
    _, info = drifting_loss(x, pos, neg, temperatures=(0.05, 0.2))
    assert set(info) == {"scale", "force_rms/0.05", "force_rms/0.2"}
    assert all(v.ndim == 0 and v > 0 for v in info.values())


def test_loss_runs_in_float32_under_autocast(sets):
    x, pos, neg = sets
    gen = x.clone().to(torch.bfloat16).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = drifting_loss(gen, pos.bfloat16(), neg.bfloat16())
    assert loss.dtype == torch.float32
    loss.sum().backward()
    assert torch.isfinite(gen.grad.float()).all()


def test_mismatched_shapes_raise_with_the_expected_shape():
    with pytest.raises(ValueError, match="pos must be"):
        drifting_loss(torch.randn(2, 4, 3), torch.randn(2, 1, 5))
