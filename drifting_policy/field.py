"""The drifting field and the drifting loss (Deng et al., "Generative Modeling via Drifting", 2026).

A generator ``f(noise) -> x`` is trained by regressing its samples onto themselves moved by a field V that
attracts them to positives (data) and repels them from negatives (other generated samples, optionally extra
negatives). V is anti-symmetric in (positives, negatives), so it vanishes when the generated distribution equals
the data. The loss is a fixed-point regression; nothing is back-propagated through V:

    loss = mean || x - stopgrad(x + V(x)) ||^2

Everything is grouped: ``B`` independent groups (one observation for a policy; one class label x feature location
for images), each with its own generated, positive and negative samples of dimension ``S``. Kernels never mix
groups; only the two scalar normalisers (the distance scale and the per-temperature force RMS) are batch-global.

This module depends on torch only, so the robot policy and the image generator use it unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

TEMPERATURES = (0.02, 0.05, 0.2)
SELF_MASK = 100.0  # added to the normalised distance of a generated sample to itself
AFFINITY_FLOOR = 1e-6  # keeps a lone positive attractive (with Ng = Np = 1 the field is regression to it)


def _pairwise_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B, N, S), (B, M, S) -> (B, N, M) Euclidean distance, clamped away from 0 for a finite gradient-free sqrt."""
    sq = (x * x).sum(-1, keepdim=True) + (y * y).sum(-1).unsqueeze(1) - 2.0 * torch.einsum("bns,bms->bnm", x, y)
    return sq.clamp_min(1e-8).sqrt()


def _forces(
    x: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor,
    n_neg: int,
    mask_self: bool,
    temperatures: Sequence[float],
):
    """Per-temperature forces on the query points ``x`` in scaled coordinates.

    x (B, N, S) query points; targets (B, T, S) with the first ``n_neg`` columns negatives and the rest
    positives; weights (B, T). With ``mask_self`` the first N target columns are ``x`` itself.
    Yields the coordinate scale first, then one (B, N, S) force per temperature.
    """
    S = x.shape[-1]
    dist = _pairwise_distance(x, targets)  # (B, N, T)
    w = weights.unsqueeze(1)  # (B, 1, T)
    # One scalar for the whole batch: the weighted mean distance (self distances included, as the reference does).
    scale = (dist * w).mean() / weights.mean()
    coord_scale = (scale / S**0.5).clamp_min(1e-3)  # after it the mean distance is ~sqrt(S)
    yield scale, coord_scale
    x_scaled, targets_scaled = x / coord_scale, targets / coord_scale
    dist = dist / scale.clamp_min(1e-3)
    if mask_self:
        N = x.shape[1]
        dist[:, :, :N] += SELF_MASK * torch.eye(N, device=x.device, dtype=dist.dtype)
    for tau in temperatures:
        logits = -dist / tau
        # Geometric mean of the softmax over targets and the softmax over query points.
        affinity = (logits.softmax(-1) * logits.softmax(-2)).clamp_min(AFFINITY_FLOOR).sqrt() * w
        a_neg, a_pos = affinity[..., :n_neg], affinity[..., n_neg:]
        # Cross-weighting: attraction scaled by the total repulsion mass and vice versa; this is what makes
        # V anti-symmetric in (positives, negatives).
        coeff = torch.cat([-a_neg * a_pos.sum(-1, keepdim=True), a_pos * a_neg.sum(-1, keepdim=True)], dim=-1)
        yield torch.einsum("bnt,bts->bns", coeff, targets_scaled) - coeff.sum(-1, keepdim=True) * x_scaled


def _ones_if_none(w: torch.Tensor | None, ref: torch.Tensor) -> torch.Tensor:
    return ref.new_ones(ref.shape[:2]) if w is None else w.to(torch.float32)


def drift_field(
    x: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    weight_pos: torch.Tensor | None = None,
    weight_neg: torch.Tensor | None = None,
    temperatures: Sequence[float] = TEMPERATURES,
) -> torch.Tensor:
    """The raw (not RMS-normalised) field V at query points, in the units of ``x``.

    x (B, N, S), pos (B, Np, S), neg (B, Nn, S) -> V (B, N, S), the sum over temperatures of the
    pre-normalisation forces. Anti-symmetric: ``drift_field(x, p, n) == -drift_field(x, n, p)``; zero when
    ``p == n``. The query points are not added as negatives here (the loss does that, with a self-mask).
    """
    with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
        x, pos, neg = x.float(), pos.float(), neg.float()
        weights = torch.cat([_ones_if_none(weight_neg, neg), _ones_if_none(weight_pos, pos)], dim=1)
        terms = _forces(x, torch.cat([neg, pos], dim=1), weights, neg.shape[1], False, temperatures)
        _, coord_scale = next(terms)
        return sum(terms) * coord_scale


def drifting_loss(
    gen: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor | None = None,
    weight_pos: torch.Tensor | None = None,
    weight_neg: torch.Tensor | None = None,
    temperatures: Sequence[float] = TEMPERATURES,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Drifting loss per group.

    gen (B, Ng, S) generated samples (the only input that receives gradients); pos (B, Np, S) positives;
    neg (B, Nn, S) optional extra negatives; weights (B, N*) applied to targets after the softmax.
    The generated samples are also negatives of each other (self excluded).

    Returns ``loss (B,)`` and ``info`` with the batch distance ``scale`` and ``force_rms/<tau>``, the
    pre-normalisation force RMS per temperature (the loss value itself sits near a constant by design).
    """
    B, Ng, S = gen.shape
    if pos.ndim != 3 or pos.shape[0] != B or pos.shape[2] != S:
        raise ValueError(f"pos must be (B={B}, Np, S={S}) like gen; got {tuple(pos.shape)}")
    if neg is None:
        neg = gen.new_zeros(B, 0, S)
    elif neg.ndim != 3 or neg.shape[0] != B or neg.shape[2] != S:
        raise ValueError(f"neg must be (B={B}, Nn, S={S}) like gen; got {tuple(neg.shape)}")
    with torch.autocast(gen.device.type, enabled=False):
        gen = gen.float()
        with torch.no_grad():
            old = gen.detach()
            targets = torch.cat([old, neg.detach().float(), pos.detach().float()], dim=1)
            weights = torch.cat(
                [old.new_ones(old.shape[:2]), _ones_if_none(weight_neg, neg), _ones_if_none(weight_pos, pos)],
                dim=1,
            )
            terms = _forces(old, targets, weights, Ng + neg.shape[1], True, temperatures)
            scale, coord_scale = next(terms)
            goal = old / coord_scale
            info = {"scale": scale}
            for tau, force in zip(temperatures, terms):
                rms = force.square().mean().clamp_min(1e-8).sqrt()
                info[f"force_rms/{tau}"] = rms
                goal = goal + force / rms
        loss = (gen / coord_scale - goal).square().mean(dim=(1, 2))
    return loss, info
