"""Multi-scale feature sets and the latent-MAE encoder."""

import torch
import torch.nn.functional as F

from drifting_policy.image.encoders import LatentMAE
from drifting_policy.image.features import feature_sets, map_sets, raw_sets


def test_feature_set_counts_for_a_four_stage_encoder_on_32x32():
    enc = LatentMAE(1, width=8, blocks=(2, 2, 2, 2)).eval()
    sets = feature_sets(torch.randn(3, 5, 1, 32, 32), enc)
    # maps: stem 32^2, stage outputs 32^2, 16^2, 8^2, 4^2. A map larger than 4x4 has 7 sets (loc, mean, std,
    # 2x2 and 4x4 patch mean/std); the 4x4 map has 5 (its 4x4 patch is the global one). Plus 2 raw sets.
    assert len(sets) == 4 * 7 + 5 + 2
    assert all(v.shape[0] % 3 == 0 and v.shape[1] == 5 for v in sets.values())
    assert sets["f0/loc"].shape == (3 * 32 * 32, 5, 8)
    assert sets["f2/p4mean"].shape == (3 * 4 * 4, 5, 16)
    assert sets["f4/mean"].shape == (3, 5, 64)
    assert sets["raw/flat"].shape == (3, 5, 32 * 32)


def test_every_second_block_and_each_stage_output_are_feature_maps():
    enc = LatentMAE(4, width=4, blocks=(3, 4, 6, 3))
    # stage blocks 3, 4, 6, 3 -> taps at (1, 2), (1, 3), (1, 3, 5), (1, 2), plus the stem
    assert len(enc.feature_maps(torch.randn(1, 4, 16, 16))) == 1 + 2 + 2 + 3 + 2


def test_groups_are_class_major_locations_and_patch_stats_are_local():
    fmap = torch.randn(2, 3, 4, 8, 8)  # (classes, samples, C, H, W)
    sets = map_sets(fmap, "m")
    assert torch.equal(sets["m/loc"][1 * 64 + 5 * 8 + 6], fmap[1, :, :, 5, 6])
    pooled = F.avg_pool2d(fmap.flatten(0, 1), 2).unflatten(0, (2, 3))  # (2, 3, 4, 4, 4)
    torch.testing.assert_close(sets["m/p2mean"][0 * 16 + 2 * 4 + 3], pooled[0, :, :, 2, 3])
    torch.testing.assert_close(sets["m/std"][1], fmap[1].flatten(2).std(-1, unbiased=False), atol=1e-5, rtol=1e-4)


def test_raw_rms_is_per_channel():
    x = torch.zeros(1, 2, 3, 4, 4)
    x[:, :, 1] = 2.0
    r = raw_sets(x)["raw/rms"]
    assert r.shape == (1, 2, 3)
    torch.testing.assert_close(r[0, 0], torch.tensor([0.0, 2.0, 0.0]), atol=1e-3, rtol=0)


def test_mae_masks_half_the_2x2_patches_and_scores_only_them():
    enc = LatentMAE(4, width=8, blocks=(1, 1))
    x = torch.randn(2, 4, 8, 8)
    mask = enc.random_mask(x, torch.Generator().manual_seed(0))
    assert mask.mean().item() == 0.5
    assert torch.equal(mask[:, :, ::2, ::2], mask[:, :, 1::2, 1::2])  # constant on each 2x2 patch
    recon, _ = enc.reconstruct(x, mask)
    assert recon.shape == x.shape
    loss, deepest = enc.mae_loss(x, torch.Generator().manual_seed(0))
    manual = ((recon - x).square() * mask).sum() / (mask.sum() * 4)
    torch.testing.assert_close(loss, manual)
    assert deepest.shape == (2, 16, 4, 4)


def test_pixel_encoder_folds_patches_to_latent_resolution():
    enc = LatentMAE(3, width=8, blocks=(1, 1), input_patch=8)
    maps = enc.feature_maps(torch.randn(1, 3, 64, 64))
    assert maps[0].shape[-2:] == (8, 8)
    loss, _ = enc.mae_loss(torch.randn(1, 3, 64, 64))
    assert torch.isfinite(loss)


def test_loc_max_size_drops_only_the_per_location_sets_of_large_maps():
    enc = LatentMAE(1, width=8, blocks=(2, 2, 2, 2)).eval()
    x = torch.randn(2, 3, 1, 32, 32)
    full, cpu = feature_sets(x, enc), feature_sets(x, enc, loc_max_size=8)
    assert set(full) - set(cpu) == {"f0/loc", "f1/loc", "f2/loc"}
    torch.testing.assert_close(cpu["f3/loc"], full["f3/loc"])
