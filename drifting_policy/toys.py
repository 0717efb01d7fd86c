"""Toy problems for the drifting field: 2-D mixtures, a conditional-multimodality test bed, their metrics.

Shared by ``scripts/toy_2d.py``, ``scripts/toy_multimodal.py`` and their tests, so the scripts stay thin.
Everything is small enough to train on one CPU thread in seconds to a minute.

Conditional test bed (issue 9): observation ``o ~ U[0, 1]``, a 2-D action drawn from one of K modes whose centres
turn slowly with ``o``; each demo has ONE action, so multimodality can only be learnt across observations.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from drifting_policy.field import TEMPERATURES, drifting_loss
from drifting_policy.policies.drifting import (  # noqa: F401  (the policy's, re-exported for the study)
    knn_positive_indices,
    knn_with_distances,
    neighbour_weights,
)
from drifting_policy.utils.ema import EMA

# ---------------------------------------------------------------------------------------------- 2-D mixtures
RING_RADIUS, RING_STD, RING_FAR = 2.0, 0.1, 0.5  # "far" = more than 5 std from every centre
RING_CENTRES = torch.tensor([[math.cos(a), math.sin(a)] for a in torch.arange(8) * (2 * math.pi / 8)]) * RING_RADIUS


def sample_ring8(n: int, gen: torch.Generator) -> torch.Tensor:
    """(n, 2) samples of 8 equally weighted Gaussians on a circle of radius 2."""
    idx = torch.randint(8, (n,), generator=gen)
    return RING_CENTRES[idx] + RING_STD * torch.randn(n, 2, generator=gen)


def sample_checkerboard(n: int, gen: torch.Generator) -> torch.Tensor:
    """(n, 2) uniform samples on the 8 black cells of a 4x4 checkerboard covering [-2, 2]^2."""
    cells = torch.tensor([(i, j) for i in range(4) for j in range(4) if (i + j) % 2 == 0], dtype=torch.float32)
    idx = torch.randint(len(cells), (n,), generator=gen)
    return cells[idx] - 2.0 + torch.rand(n, 2, generator=gen)


DISTRIBUTIONS_2D = {"ring8": sample_ring8, "checkerboard": sample_checkerboard}


def ring_mode_fractions(x: torch.Tensor) -> tuple[torch.Tensor, float]:
    """x (n, 2) -> (fraction of samples nearest each of the 8 centres and within RING_FAR of it (8,), far fraction)."""
    d = torch.cdist(x, RING_CENTRES)
    dmin, nearest = d.min(dim=1)
    near = dmin <= RING_FAR
    fractions = torch.bincount(nearest[near], minlength=8).float() / len(x)
    return fractions, float((~near).float().mean())


def checkerboard_fraction_inside(x: torch.Tensor) -> float:
    """Fraction of samples that land on a black cell (1.0 for the data)."""
    cell = torch.floor(x + 2.0)
    inside = ((cell >= 0) & (cell < 4)).all(dim=1) & ((cell.sum(dim=1) % 2) == 0)
    return float(inside.float().mean())


def mlp(in_dim: int, out_dim: int, hidden: int = 256, n_layers: int = 3) -> nn.Sequential:
    """``n_layers`` linear layers with SiLU between them."""
    dims = [in_dim] + [hidden] * (n_layers - 1) + [out_dim]
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.SiLU()]
    return nn.Sequential(*layers[:-1])


class Generator2D(nn.Module):
    """x = eps + MLP(input_gain * eps), eps ~ N(0, I_2).

    Why the residual: the samples start as N(0, I), at the data's scale. A plain MLP starts with outputs ~100x
    narrower than the data; the field then sees every positive equally far away, pulls the whole cloud to the data
    mean and it stays collapsed there (measured: all 4,000 samples far from every ring mode).
    Why the input gain: the map must carve sharp boundaries in noise space between modes; a larger input scale lets
    Adam's fixed-size steps sharpen them faster (measured on the ring at 1k steps: 19% vs 31% of samples between).
    """

    def __init__(self, hidden: int = 128, n_layers: int = 4, input_gain: float = 4.0):
        super().__init__()
        self.input_gain = input_gain
        self.body = mlp(2, 2, hidden, n_layers)

    def forward(self, eps: torch.Tensor) -> torch.Tensor:
        return eps + self.body(eps * self.input_gain)


def train_generator_2d(
    sampler,
    steps: int = 3000,
    n_groups: int = 32,
    n_gen: int = 32,
    n_pos: int = 32,
    lr: float = 3e-3,
    hidden: int = 256,
    input_gain: float = 8.0,
    temperatures: tuple[float, ...] = TEMPERATURES,
    ema_decay: float = 0.995,
    seed: int = 0,
    snapshot_every: int = 0,
    n_snapshot: int = 2000,
):
    """Train noise (2-D) -> x (2-D) with drifting_loss: each step ``n_groups`` independent groups of ``n_gen``
    generated vs ``n_pos`` fresh data samples (one distribution, so the groups only add samples per step while
    keeping each kernel small; see docs/notes/toys.md for why that beats one large group).

    Returns the EMA generator and a list of (step, samples (n_snapshot, 2)) snapshots (step 0 and every
    ``snapshot_every`` steps, plus the end).
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    net = Generator2D(hidden, input_gain=input_gain)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    # Cosine decay lets the last steps settle the modes' widths instead of jittering around them.
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=lr * 0.05)
    ema = EMA(net, ema_decay, "constant")  # the toys' MLPs keep no buffers: the parameters are all their state
    probe = torch.randn(n_snapshot, 2, generator=gen)
    snapshots = []
    for step in range(steps + 1):
        if snapshot_every and step % snapshot_every == 0 or step == steps:
            with torch.no_grad():
                snapshots.append((step, ema.sync()(probe)))
        if step == steps:
            break
        x = net(torch.randn(n_groups * n_gen, 2, generator=gen)).view(n_groups, n_gen, 2)
        pos = sampler(n_groups * n_pos, gen).view(n_groups, n_pos, 2)
        loss, _ = drifting_loss(x, pos, temperatures=temperatures)
        opt.zero_grad(set_to_none=True)
        loss.mean().backward()
        opt.step()
        sched.step()
        ema.update(net)
    return ema.sync(), snapshots


# ------------------------------------------------------------------------------- conditional multimodal toy
MODE_RADIUS, MODE_STD, HIT_RADIUS = 0.7, 0.05, 0.15
TASKS = ("balanced2", "prop2", "three")  # p = (1/2, 1/2); p(mode 0) = o; three equally likely modes


def mode_centres(task: str, o: torch.Tensor) -> torch.Tensor:
    """o (N,) in [0, 1] -> centres (N, K, 2): K points on a circle of radius 0.7 that turn by pi/2 over o in [0, 1]."""
    k = 3 if task == "three" else 2
    base = torch.arange(k, dtype=torch.float32) * (2 * math.pi / k) + math.pi / 2
    angle = base[None, :] + (o[:, None] - 0.5) * (math.pi / 2)
    return MODE_RADIUS * torch.stack([angle.cos(), angle.sin()], dim=-1)


def mode_probs(task: str, o: torch.Tensor) -> torch.Tensor:
    """o (N,) -> p(mode | o) (N, K)."""
    if task == "balanced2":
        return torch.full((len(o), 2), 0.5)
    if task == "prop2":
        return torch.stack([o, 1 - o], dim=1)
    if task == "three":
        return torch.full((len(o), 3), 1 / 3)
    raise ValueError(f"unknown toy task '{task}'; expected one of {TASKS}")


def sample_actions(task: str, o: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """o (N,) -> one demonstrated action per observation (N, 2)."""
    modes = torch.multinomial(mode_probs(task, o), 1, generator=gen)[:, 0]
    centres = mode_centres(task, o)[torch.arange(len(o)), modes]
    return centres + MODE_STD * torch.randn(len(o), 2, generator=gen)


def _distance_to_hull(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Distance of x (N, M, 2) to the convex hull of c (N, K, 2), K in {2, 3} (segment or triangle)."""
    k = c.shape[1]
    edges = [(0, 1)] if k == 2 else [(0, 1), (1, 2), (2, 0)]
    dists = []
    for i, j in edges:
        a, b = c[:, i, None], c[:, j, None]  # (N, 1, 2)
        t = (((x - a) * (b - a)).sum(-1) / (b - a).square().sum(-1)).clamp(0, 1)
        dists.append((x - a - t[..., None] * (b - a)).norm(dim=-1))
    d = torch.stack(dists).min(dim=0).values
    if k == 3:  # inside the triangle: the signs of the three edge cross products agree
        cross = []
        for i, j in edges:
            a, b = c[:, i, None], c[:, j, None]
            e, p = b - a, x - a
            cross.append(e[..., 0] * p[..., 1] - e[..., 1] * p[..., 0])
        cross = torch.stack(cross)
        inside = (cross >= 0).all(dim=0) | (cross <= 0).all(dim=0)
        d = torch.where(inside, torch.zeros_like(d), d)
    return d


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-row energy distance between sample sets x (N, M, 2) and y (N, L, 2) -> (N,), unbiased (the within-set
    means skip the zero self-distances), so two sample sets of one distribution score ~0 (+- noise)."""

    def within(a):
        m = a.shape[1]
        return torch.cdist(a, a).sum(dim=(1, 2)) / (m * (m - 1))

    return 2 * torch.cdist(x, y).mean(dim=(1, 2)) - within(x) - within(y)


def multimodal_metrics(task: str, o: torch.Tensor, samples: torch.Tensor, gen: torch.Generator) -> dict[str, float]:
    """Score samples (N, M, 2) drawn for observations o (N,).

    hit: fraction within HIT_RADIUS of a true mode centre; between: fraction not on a mode but within HIT_RADIUS of
    the modes' convex hull (what averaging produces); mode_tv: mean over observations of the total-variation
    distance between the empirical mode frequencies (all samples assigned to their nearest mode) and p(mode | o)
    (0 = right balance, 0.5 = one of two balanced modes only); energy: mean per-observation energy distance to
    fresh samples of the true conditional.
    """
    centres, probs = mode_centres(task, o), mode_probs(task, o)
    d = torch.cdist(samples, centres)  # (N, M, K)
    dmin, nearest = d.min(dim=-1)
    hit = dmin <= HIT_RADIUS
    between = ~hit & (_distance_to_hull(samples, centres) <= HIT_RADIUS)
    counts = torch.nn.functional.one_hot(nearest, probs.shape[1]).float().mean(dim=1)  # (N, K)
    tv = 0.5 * (counts - probs).abs().sum(dim=1)
    m = samples.shape[1]
    truth = torch.stack([sample_actions(task, o, gen) for _ in range(m)], dim=1)
    return {
        "hit": float(hit.float().mean()),
        "between": float(between.float().mean()),
        "mode_tv": float(tv.mean()),
        "energy": float(energy_distance(samples, truth).mean()),
    }


# ------------------------------------------------------------------ methods on the conditional toy (issue 9)
DDPM_STEPS = 100


def _cosine_alpha_bar(n: int = DDPM_STEPS) -> torch.Tensor:
    """squaredcos_cap_v2 (Diffusion Policy's schedule): cumulative alpha products (n,), betas capped at 0.999."""
    f = lambda t: math.cos((t / n + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    betas = torch.tensor([min(1 - f(i + 1) / f(i), 0.999) for i in range(n)])
    return torch.cumprod(1 - betas, dim=0)


def train_conditional(
    task: str,
    method: str,
    seed: int = 0,
    n_demos: int = 2000,
    steps: int = 4000,
    batch: int = 256,
    g: int = 8,
    k: int = 1,
    hidden: int = 256,
    lr: float = 1e-3,
    ema_decay: float = 0.999,
    noise_gain: float = 1.0,
    noise_skip: float = 0.0,
    skip_anneal: float = 0.0,
    weighting: str = "none",
    progress=None,
):
    """Train one method on ``n_demos`` (o, a) pairs of ``task``; returns ``sample(o (N,), m) -> (N, m, 2)`` (EMA).

    method: "mse" (deterministic regression), "ddpm" (epsilon prediction, 100 steps), "drift" (G generated
    samples per observation; positives = the demos of its k nearest observations in the batch, itself included;
    k = 1 is the per-observation recipe). ``noise_gain`` scales the drifting generator's noise input;
    ``noise_skip`` adds ``noise_skip * noise`` to its output (the policy's ``noise_skip``), decayed linearly to 0
    over the first ``skip_anneal`` fraction of the steps when that is > 0 (the policy's ``noise_skip_anneal``);
    ``weighting="gaussian"`` weighs the neighbours' demos by the policy's observation kernel (``weight_pos``).
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 10_000)
    obs = torch.rand(n_demos, generator=gen)
    act = sample_actions(task, obs, gen)
    in_dim = {"mse": 1, "ddpm": 4, "drift": 3}[method]
    net = mlp(in_dim, 2, hidden, n_layers=3)
    ema = EMA(net, ema_decay, "constant")
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    alpha_bar = _cosine_alpha_bar()
    def skip_at(step: int) -> float:
        return noise_skip * max(0.0, 1.0 - step / (skip_anneal * steps)) if skip_anneal > 0 else noise_skip

    for step in range(steps):
        idx = torch.randint(n_demos, (batch,), generator=gen)
        o, a = obs[idx, None], act[idx]
        if method == "mse":
            loss = (net(o) - a).square().mean()
        elif method == "ddpm":
            t = torch.randint(DDPM_STEPS, (batch,), generator=gen)
            noise = torch.randn(batch, 2, generator=gen)
            ab = alpha_bar[t, None]
            x_t = ab.sqrt() * a + (1 - ab).sqrt() * noise
            loss = (net(torch.cat([o, x_t, t[:, None] / DDPM_STEPS], 1)) - noise).square().mean()
        else:
            eps = torch.randn(batch, g, 2, generator=gen)
            x = net(torch.cat([o[:, None].expand(-1, g, -1), noise_gain * eps], -1)) + skip_at(step) * eps  # (B, G, 2)
            idx, dist = knn_with_distances(o, k)
            w = neighbour_weights(dist) if weighting == "gaussian" else None
            loss = drifting_loss(x, a[idx], weight_pos=w)[0].mean()  # positives (B, k, 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema.update(net)
        if progress is not None:
            progress.update(1)
    model = ema.sync()

    @torch.no_grad()
    def sample(o: torch.Tensor, m: int, noise_gen: torch.Generator | None = None) -> torch.Tensor:
        noise_gen = noise_gen or torch.Generator().manual_seed(seed + 20_000)
        oo = o[:, None, None].expand(-1, m, 1)
        if method == "mse":
            return model(oo)
        if method == "drift":
            eps = torch.randn(len(o), m, 2, generator=noise_gen)
            return model(torch.cat([oo, noise_gain * eps], -1)) + skip_at(steps) * eps
        return ddpm_sample(model, oo, alpha_bar, noise_gen)

    return sample


def ddpm_sample(model: nn.Module, oo: torch.Tensor, alpha_bar: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Ancestral DDPM sampling (100 steps, x0 clipped to [-1, 1]) for conditioning oo (N, m, 1) -> (N, m, 2)."""
    x = torch.randn(*oo.shape[:2], 2, generator=gen)
    for t in reversed(range(len(alpha_bar))):
        ab, ab_prev = alpha_bar[t], alpha_bar[t - 1] if t > 0 else torch.tensor(1.0)
        eps = model(torch.cat([oo, x, torch.full_like(oo, t / len(alpha_bar))], -1))
        x0 = ((x - (1 - ab).sqrt() * eps) / ab.sqrt()).clamp(-1, 1)
        beta = 1 - ab / ab_prev
        mean = (ab_prev.sqrt() * beta * x0 + (1 - beta).sqrt() * (1 - ab_prev) * x) / (1 - ab)
        x = mean + (beta * (1 - ab_prev) / (1 - ab)).sqrt() * torch.randn(x.shape, generator=gen) if t > 0 else mean
    return x
