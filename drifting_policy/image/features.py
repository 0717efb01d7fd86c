"""Multi-scale feature sets for the image drifting loss (docs/notes/field.md section 2).

Every set is a tensor (groups, samples, S). Groups are class x location: samples are only compared with samples of
the same class at the same location (or the same patch), never across locations. Each set gets its own
``drifting_loss`` call, so each has its own distance scale and force normalisation.
"""

from __future__ import annotations

import torch
from einops import rearrange

PATCH_SIZES = (2, 4)


def map_sets(fmap: torch.Tensor, name: str, loc_max_size: int | None = None) -> dict[str, torch.Tensor]:
    """One feature map (G, N, C, H, W) -> its sets.

    - ``loc``: the C-vector at each location, groups G*H*W;
    - ``mean`` / ``std``: over all locations, groups G;
    - ``p{k}mean`` / ``p{k}std``: over each k x k patch, groups G*(H/k)*(W/k); only when the map is larger than
      the patch (otherwise it would repeat the global statistics).
    Groups are ordered class-major (all locations of class 0 first). ``loc_max_size`` drops the per-location set
    of maps wider than it: the paper keeps all of them; on a CPU the 32x32 ones dominate the step time.
    """
    G, N, C, H, W = fmap.shape
    out = {}
    if loc_max_size is None or max(H, W) <= loc_max_size:
        out[f"{name}/loc"] = rearrange(fmap, "g n c h w -> (g h w) n c")
    if H * W > 1:
        flat = fmap.flatten(3).float()
        out[f"{name}/mean"] = flat.mean(-1)
        out[f"{name}/std"] = (flat.var(-1, unbiased=False) + 1e-6).sqrt()
    for k in PATCH_SIZES:
        if H > k and W > k and H % k == 0 and W % k == 0:
            patches = rearrange(fmap.float(), "g n c (h p) (w q) -> (g h w) n c (p q)", p=k, q=k)
            out[f"{name}/p{k}mean"] = patches.mean(-1)
            out[f"{name}/p{k}std"] = (patches.var(-1, unbiased=False) + 1e-6).sqrt()
    return out


def raw_sets(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The generator output itself (G, N, C, H, W): flattened as one vector, and its per-channel RMS."""
    return {
        "raw/flat": x.flatten(2),
        "raw/rms": (x.float().square().mean(dim=(3, 4)) + 1e-6).sqrt(),
    }


def feature_sets(x: torch.Tensor, encoder=None, use_raw: bool = True, loc_max_size: int | None = None
                 ) -> dict[str, torch.Tensor]:
    """x (G, N, C, H, W) images or latents -> every set, for a frozen ``encoder`` with ``feature_maps`` (or none)."""
    G, N = x.shape[:2]
    sets = raw_sets(x) if use_raw else {}
    if encoder is not None:
        for i, fmap in enumerate(encoder.feature_maps(x.flatten(0, 1))):
            sets.update(map_sets(fmap.unflatten(0, (G, N)), f"f{i}", loc_max_size))
    if not sets:
        raise ValueError("no feature sets: give an encoder or use_raw=True")
    return sets

