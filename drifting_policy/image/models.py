"""DiT-style one-step generator for drifting image models (the paper's ImageNet section; docs/notes/field.md section 2).

noise (B, C, H, W) + class label + CFG scale alpha + 32 random style indices -> image or latent (B, C, H, W).
Blocks use RMSNorm, QK-norm, 2-D RoPE, SwiGLU and adaLN-zero modulation from one condition vector; 16 learned
in-context tokens are prepended to the patch tokens and dropped at the output. The same backbone serves the
flow-matching baseline: an optional time input adds a timestep embedding to the condition.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

N_STYLE = 32  # random style indices per sample
STYLE_CODEBOOK = 64  # entries in each style codebook


@dataclass(frozen=True)
class DiTSize:
    width: int
    depth: int
    heads: int
    patch: int
    image_size: int
    channels: int


# Paper sizes: latent (32x32x4 SD-VAE latents, patch 2) and pixel (256x256x3, patch 16); B = 768/12/12,
# L = 1024/24/16. The CPU sizes are for Fashion-MNIST / digits padded to 32x32x1 and for tests.
SIZES: dict[str, DiTSize] = {
    "B/2": DiTSize(768, 12, 12, 2, 32, 4),
    "L/2": DiTSize(1024, 24, 16, 2, 32, 4),
    "B/16": DiTSize(768, 12, 12, 16, 256, 3),
    "L/16": DiTSize(1024, 24, 16, 16, 256, 3),
    "S/4-cpu": DiTSize(192, 6, 6, 4, 32, 1),
    "T/4-cpu": DiTSize(96, 4, 4, 4, 32, 1),
    "N/2-test": DiTSize(32, 2, 2, 2, 8, 1),
}
PAPER_PARAMS = {"B/2": 133e6, "L/2": 463e6, "B/16": 134e6, "L/16": 464e6}


class RMSNorm(nn.Module):
    def __init__(self, dim: int, affine: bool = True, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * torch.rsqrt(x.float().square().mean(-1, keepdim=True) + self.eps).to(x.dtype)
        return y * self.weight if self.weight is not None else y


def rope_2d(grid: int, head_dim: int, n_prefix: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin) of shape (n_prefix + grid^2, head_dim / 2): half the rotary pairs follow the row, half the column.

    The in-context prefix tokens sit at no position (cos 1, sin 0) so they attend position-free.
    """
    quarter = head_dim // 4
    freqs = base ** (-torch.arange(quarter, dtype=torch.float32) / quarter)
    ys, xs = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    angles = torch.cat([ys.reshape(-1, 1) * freqs, xs.reshape(-1, 1) * freqs], dim=1)  # (grid^2, head_dim/2)
    angles = torch.cat([torch.zeros(n_prefix, angles.shape[1]), angles], dim=0)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, heads, L, head_dim) with consecutive pairs rotated by the angles in cos/sin (L, head_dim/2)."""
    x1, x2 = x.float().unflatten(-1, (-1, 2)).unbind(-1)
    out = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)
    return out.to(x.dtype)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = RMSNorm(dim // heads)
        self.k_norm = RMSNorm(dim // heads)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(x), "b l (three h d) -> three b h l d", three=3, h=self.heads)
        q, k = apply_rope(self.q_norm(q), cos, sin), apply_rope(self.k_norm(k), cos, sin)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(rearrange(out, "b h l d -> b l (h d)"))


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(a) * b)


def swiglu_hidden(dim: int) -> int:
    """2/3 of the usual 4x MLP width (equal parameter count to a GELU MLP), rounded up to a multiple of 32."""
    return 32 * math.ceil(8 * dim / 3 / 32)


class Block(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1 = RMSNorm(dim, affine=False)
        self.attn = Attention(dim, heads)
        self.norm2 = RMSNorm(dim, affine=False)
        self.mlp = SwiGLU(dim, swiglu_hidden(dim))
        self.ada = nn.Linear(dim, 6 * dim)  # adaLN-zero: shift/scale/gate for attention and MLP

    def forward(self, x, c, cos, sin):
        sh1, sc1, g1, sh2, sc2, g2 = self.ada(F.silu(c)).unsqueeze(1).chunk(6, dim=-1)
        x = x + g1 * self.attn(self.norm1(x) * (1 + sc1) + sh1, cos, sin)
        return x + g2 * self.mlp(self.norm2(x) * (1 + sc2) + sh2)


class ScalarEmbedder(nn.Module):
    """Scalar (CFG scale or time) -> sinusoidal features -> 2-layer MLP of width ``dim``."""

    def __init__(self, dim: int, n_freq: int = 256, max_period: float = 10000.0):
        super().__init__()
        self.register_buffer("freqs", max_period ** (-torch.arange(n_freq // 2) / (n_freq // 2)), persistent=False)
        self.mlp = nn.Sequential(nn.Linear(n_freq, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        args = s.float().reshape(-1, 1) * self.freqs * 1000.0  # scalars live in [0, 10]; spread them out
        return self.mlp(torch.cat([args.cos(), args.sin()], dim=-1))


class DiT(nn.Module):
    def __init__(
        self,
        size: DiTSize,
        num_classes: int,
        n_context: int = 16,
        time_conditioned: bool = False,
    ):
        super().__init__()
        self.size, self.num_classes, self.n_context = size, num_classes, n_context
        d, p = size.width, size.patch
        if size.image_size % p or d % size.heads or (d // size.heads) % 4:
            raise ValueError(f"inconsistent DiT size {size}: image_size % patch and head_dim % 4 must be 0")
        self.grid = size.image_size // p
        self.patch_embed = nn.Linear(p * p * size.channels, d)
        self.context = nn.Parameter(torch.randn(n_context, d) * 0.02)
        self.class_embed = nn.Embedding(num_classes, d)
        self.style_embed = nn.Embedding(N_STYLE * STYLE_CODEBOOK, d)  # 32 codebooks of 64, stored end to end
        self.register_buffer("style_offset", torch.arange(N_STYLE) * STYLE_CODEBOOK, persistent=False)
        self.cfg_embed = ScalarEmbedder(d)
        self.time_embed = ScalarEmbedder(d) if time_conditioned else None
        self.blocks = nn.ModuleList([Block(d, size.heads) for _ in range(size.depth)])
        self.final_norm = RMSNorm(d, affine=False)
        self.final_ada = nn.Linear(d, 2 * d)
        self.final = nn.Linear(d, p * p * size.channels)
        cos, sin = rope_2d(self.grid, d // size.heads, n_context)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for emb in (self.class_embed, self.style_embed):
            nn.init.normal_(emb.weight, std=0.02)
        # adaLN-zero: every residual branch starts at zero. The output projection is NOT zeroed: a generator whose
        # first output ignored the noise would start fully collapsed (all samples identical).
        for lin in [b.ada for b in self.blocks] + [self.final_ada]:
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def condition(self, labels, cfg_scale, style, t=None) -> torch.Tensor:
        """(B,) labels, (B,) CFG scales, (B, 32) style indices in [0, 64), optional (B,) times -> (B, D)."""
        c = self.class_embed(labels) + self.cfg_embed(cfg_scale)
        c = c + self.style_embed(style + self.style_offset).sum(1)
        if self.time_embed is not None:
            if t is None:
                raise ValueError("this DiT is time-conditioned (flow matching): pass t")
            c = c + self.time_embed(t)
        return c

    def forward(self, noise, labels, cfg_scale, style, t=None) -> torch.Tensor:
        """noise (B, C, H, W) -> output (B, C, H, W) in one network evaluation."""
        p = self.size.patch
        x = self.patch_embed(rearrange(noise, "b c (h p) (w q) -> b (h w) (p q c)", p=p, q=p))
        c = self.condition(labels, cfg_scale, style, t)
        # The in-context tokens carry the condition too, so attention can read it directly.
        ctx = (self.context + c.unsqueeze(1)).to(x.dtype)
        x = torch.cat([ctx, x], dim=1)
        for block in self.blocks:
            x = block(x, c, self.rope_cos, self.rope_sin)
        shift, scale = self.final_ada(F.silu(c)).unsqueeze(1).chunk(2, dim=-1)
        x = self.final(self.final_norm(x[:, self.n_context :]) * (1 + scale) + shift)
        return rearrange(x, "b (h w) (p q c) -> b c (h p) (w q)", h=self.grid, p=p, q=p)

    def random_inputs(self, n: int, generator: torch.Generator | None = None, device=None):
        """Noise (n, C, H, W) and style indices (n, 32) for n samples."""
        s = self.size
        noise = torch.randn(n, s.channels, s.image_size, s.image_size, generator=generator, device=device)
        style = torch.randint(0, STYLE_CODEBOOK, (n, N_STYLE), generator=generator, device=device)
        return noise, style


def build_dit(size: str | DiTSize, num_classes: int, device=None, **kw) -> DiT:
    """Build from a size-table name; ``device='meta'`` builds without memory (for counting parameters)."""
    if isinstance(size, str):
        if size not in SIZES:
            raise KeyError(f"unknown DiT size {size!r}; expected one of {sorted(SIZES)}")
        size = SIZES[size]
    with torch.device(device or "cpu"):
        return DiT(size, num_classes, **kw)


def build_generator(cfg) -> DiT:
    """The generator an image config describes (``model.size``, ``model.n_context``, ``data.num_classes``; the
    flow-matching baseline is time-conditioned), checked against the config's data shape. Built on the CPU, so
    the initial weights of a seed are the same whatever device trains them."""
    model = build_dit(cfg.model.size, cfg.data.num_classes, n_context=cfg.model.get("n_context", 16),
                      time_conditioned=cfg.method == "flow_matching")
    s, dc = model.size, cfg.data
    if (s.channels, s.image_size) != (dc.channels, dc.image_size):
        raise ValueError(f"model.size {cfg.model.size} makes {s.channels}x{s.image_size}^2 samples but data is "
                         f"{dc.channels}x{dc.image_size}^2")
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
