"""``predict_action`` latency at batch 1, split into observation encoding and action generation.

Median of many calls after warm-up; on a GPU every timed region is synchronised, so the same code measures both.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from drifting_policy.factory import build_policy


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_ms(fn, device: torch.device, n_warmup: int, n_calls: int) -> float:
    for _ in range(n_warmup):
        fn()
    times = []
    for _ in range(n_calls):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times))


def example_obs(shape_meta: dict, n_obs_steps: int, batch: int = 1, device="cpu") -> dict[str, torch.Tensor]:
    """Random raw observations {key: (batch, To, ...)}: rgb in [0, 1], low-dim standard normal."""
    g = torch.Generator().manual_seed(0)
    out = {}
    for key, meta in shape_meta["obs"].items():
        shape = (batch, n_obs_steps, *meta["shape"])
        x = torch.rand(shape, generator=g) if meta.get("type", "low_dim") == "rgb" else torch.randn(shape, generator=g)
        out[key] = x.to(device)
    return out


def untrained_policy(cfg, seed: int = 0):
    """A freshly initialised policy of ``cfg`` (a composed run config) with its normaliser fitted to standard-normal
    data: what timing needs (a call costs the same whatever the weights), no dataset required."""
    torch.manual_seed(seed)
    policy = build_policy(cfg)
    meta = cfg.task.shape_meta
    g = np.random.default_rng(seed)
    low = {k: g.standard_normal((16, *m.shape)) for k, m in meta.obs.items() if m.get("type", "low_dim") != "rgb"}
    policy.normalizer.fit(low | {"action": g.standard_normal((16, *meta.action.shape))})
    return policy


@torch.no_grad()
def measure_latency(policy, n_warmup: int = 5, n_calls: int = 50) -> dict:
    """Median milliseconds of: the whole ``predict_action``, observation encoding, action generation, and one
    backbone forward pass; with NFE and parameter counts."""
    policy.eval()
    device = policy.device
    obs = example_obs(policy.shape_meta, policy.n_obs_steps, device=device)
    cond = policy.encode_obs(obs)
    x = torch.randn(1, policy.horizon, policy.action_dim, device=device)
    step = torch.zeros(1, dtype=torch.long, device=device) if policy.model.step_embed_dim else None
    return {
        "predict_action_ms": _median_ms(lambda: policy.predict_action(obs), device, n_warmup, n_calls),
        "encode_ms": _median_ms(lambda: policy.encode_obs(obs), device, n_warmup, n_calls),
        "generate_ms": _median_ms(lambda: policy.generate(cond), device, n_warmup, n_calls),
        "backbone_forward_ms": _median_ms(lambda: policy.model(x, cond, step), device, n_warmup, n_calls),
        "nfe": getattr(policy, "nfe", 1),
        "params_backbone_M": sum(p.numel() for p in policy.model.parameters()) / 1e6,
        "params_encoder_M": sum(p.numel() for p in policy.obs_encoder.parameters()) / 1e6,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
    }
