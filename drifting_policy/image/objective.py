"""The image drifting objective: multi-scale feature sets, one ``drifting_loss`` call per set, summed.

All class groups of a step are one batched tensor (G classes x N samples); no Python loop over classes.
"""

from __future__ import annotations

import torch

from drifting_policy.field import TEMPERATURES, drifting_loss
from drifting_policy.image.features import feature_sets
from drifting_policy.utils.distributed import gather_groups


def drifting_objective(
    gen: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor | None,
    neg_weight: torch.Tensor | None,
    encoder=None,
    use_raw: bool = True,
    temperatures=TEMPERATURES,
    loc_max_size: int | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """gen (G, Ng, C, H, W) with grad; pos (G, Np, C, H, W); neg (G, Nu, C, H, W) unconditional negatives with
    per-class weights neg_weight (G,).

    Returns the sum over feature sets of the mean per-group loss over the GLOBAL batch (all ranks' groups), and
    logs (per-set loss and the summed pre-normalisation force RMS at each temperature). Under DDP every rank
    returns the same value; the gradient reaches only this rank's generated samples.
    """
    G, Ng = gen.shape[:2]
    gen_sets = feature_sets(gen, encoder, use_raw, loc_max_size)
    with torch.no_grad():
        real = pos if neg is None else torch.cat([pos, neg], dim=1)
        real_sets = feature_sets(real, encoder, use_raw, loc_max_size)
    total = gen.new_zeros((), dtype=torch.float32)
    logs: dict[str, float] = {}
    for name, g in gen_sets.items():
        r = real_sets[name]
        locations = g.shape[0] // G
        p, n, w = r[:, : pos.shape[1]], None, None
        if neg is not None:
            n = r[:, pos.shape[1] :]
            w = neg_weight.repeat_interleave(locations).unsqueeze(1).expand(-1, n.shape[1])
            n, w = gather_groups(n.contiguous()), gather_groups(w.contiguous())
        loss, info = drifting_loss(gather_groups(g), gather_groups(p.contiguous()), n, weight_neg=w,
                                   temperatures=temperatures)
        loss = loss.mean()
        total = total + loss
        logs[f"loss/{name}"] = float(loss.detach())
        for tau in temperatures:
            key = f"force_rms/{tau}"
            logs[key] = logs.get(key, 0.0) + float(info[key])
    return total, logs
