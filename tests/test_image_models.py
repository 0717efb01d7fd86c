"""The DiT generator: the paper's size table and what its outputs depend on."""

import pytest
import torch

from drifting_policy.image.models import PAPER_PARAMS, SIZES, build_dit, count_parameters


@pytest.mark.parametrize("size", sorted(PAPER_PARAMS))
def test_paper_sizes_match_the_published_parameter_counts_within_3_percent(size):
    n = count_parameters(build_dit(size, 1000, device="meta"))
    assert abs(n / PAPER_PARAMS[size] - 1) < 0.03, f"{size}: {n / 1e6:.2f}M vs {PAPER_PARAMS[size] / 1e6:.0f}M"


def test_size_table_geometry():
    assert (SIZES["B/2"].width, SIZES["B/2"].depth, SIZES["B/2"].heads) == (768, 12, 12)
    assert (SIZES["L/16"].width, SIZES["L/16"].depth, SIZES["L/16"].heads) == (1024, 24, 16)
    assert SIZES["L/2"].image_size // SIZES["L/2"].patch == SIZES["L/16"].image_size // SIZES["L/16"].patch == 16
    assert count_parameters(build_dit("T/4-cpu", 10)) < 2e6


def randomised(seed=0):
    torch.manual_seed(seed)
    model = build_dit("N/2-test", 10, n_context=4)
    with torch.no_grad():  # leave adaLN-zero's identity start so every input can reach the output
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def test_output_has_the_noise_shape_and_depends_on_every_input():
    model = randomised()
    noise, style = model.random_inputs(4, torch.Generator().manual_seed(0))
    labels, cfg = torch.tensor([0, 1, 2, 3]), torch.full((4,), 2.0)
    base = model(noise, labels, cfg, style)
    assert base.shape == noise.shape
    style2 = style.clone()
    style2[:, 31] = (style2[:, 31] + 1) % 64  # one index of the last codebook
    for changed in [
        model(noise + 0.1, labels, cfg, style),
        model(noise, (labels + 1) % 10, cfg, style),
        model(noise, labels, cfg + 1.0, style),
        model(noise, labels, cfg, style2),
    ]:
        assert (changed - base).abs().max() > 1e-4


def test_fresh_generator_output_already_varies_with_the_noise():
    model = build_dit("N/2-test", 10, n_context=4)
    noise, style = model.random_inputs(8, torch.Generator().manual_seed(1))
    out = model(noise, torch.zeros(8, dtype=torch.long), torch.ones(8), style)
    assert out.std(0).mean() > 1e-3  # not collapsed at initialisation


def test_time_conditioned_model_requires_t():
    model = build_dit("N/2-test", 10, n_context=4, time_conditioned=True)
    noise, style = model.random_inputs(2)
    with pytest.raises(ValueError, match="pass t"):
        model(noise, torch.zeros(2, dtype=torch.long), torch.ones(2), style)
    assert model(noise, torch.zeros(2, dtype=torch.long), torch.ones(2), style, t=torch.rand(2)).shape == noise.shape


def test_unknown_size_names_the_choices():
    with pytest.raises(KeyError, match="B/2"):
        build_dit("XL/2", 10)
