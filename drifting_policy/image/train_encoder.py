"""Train the latent-MAE feature encoder (masked reconstruction, optional classification fine-tune).

The run's config has an ``encoder`` block (width, blocks, steps, batch, lr, ema, ...). The EMA weights (constant
decay ``encoder.ema``; the first update copies the weights) are written as ``<encoder.checkpoint>/encoder.safetensors``
+ ``encoder.json`` (constructor arguments), atomically.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from drifting_policy.image.data import build_source
from drifting_policy.image.encoders import LatentMAE, save_encoder
from drifting_policy.utils.distributed import init_from_env, wants_cuda, world
from drifting_policy.utils.ema import EMA


def train_encoder(cfg) -> Path:
    """MAE pre-training for ``encoder.steps`` steps, then ``encoder.finetune_steps`` steps whose loss mixes in
    cross-entropy with a weight ramping linearly 0 -> ``encoder.ce_weight``."""
    device = init_from_env(wants_cuda(cfg.get("device", "auto")))
    rank, size = world()
    ec, dc = cfg.encoder, cfg.data
    torch.manual_seed(cfg.seed)
    args = {"in_channels": dc.channels, "width": ec.width, "blocks": list(ec.blocks),
            "num_classes": dc.num_classes if ec.get("finetune_steps", 0) else 0, "input_patch": ec.get("input_patch", 1)}
    model = LatentMAE(**{**args, "blocks": tuple(ec.blocks)}).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=ec.lr, betas=(0.9, 0.95), weight_decay=ec.weight_decay)
    # LatentMAE keeps no buffers (GroupNorm only), so averaging the parameters averages all of its state.
    ema = EMA(model, ec.get("ema", 0.999), "constant")
    source = build_source(dc, cfg.seed + 104729 + rank, rank, size)
    mask_gen = torch.Generator(device).manual_seed(cfg.seed + rank)
    total = ec.steps + ec.get("finetune_steps", 0)
    out = Path(ec.checkpoint)
    if rank == 0:
        out.parent.mkdir(parents=True, exist_ok=True)
    log = open(out.with_name(out.name + "_log.jsonl"), "a") if rank == 0 else None
    bar = tqdm(range(total), desc="encoder", disable=rank != 0)
    for step in bar:
        t0, c0 = time.perf_counter(), time.process_time()
        x, y = source.next(ec.batch)
        x, y = x.to(device), y.to(device)
        lr = ec.lr * min(1.0, (step + 1) / max(1, ec.get("warmup", 100)))
        for g in opt.param_groups:
            g["lr"] = lr
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            mae, deepest = model.mae_loss(x, mask_gen)
            loss, logs = mae, {"mae": float(mae.detach())}
            if step >= ec.steps:
                lam = ec.get("ce_weight", 0.1) * (step - ec.steps + 1) / ec.finetune_steps
                logits = model.classify(deepest)
                ce = F.cross_entropy(logits.float(), y)
                loss = (1 - lam) * mae + lam * ce
                logs.update(ce=float(ce.detach()), acc=float((logits.argmax(-1) == y).float().mean()))
        loss.backward()
        if size > 1:  # plain data parallelism: average gradients by hand (no DDP wrapper needed)
            for p in model.parameters():
                if p.grad is not None:
                    torch.distributed.all_reduce(p.grad)
                    p.grad /= size
        torch.nn.utils.clip_grad_norm_(model.parameters(), 2.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema.update(model)
        if rank == 0 and ((step + 1) % cfg.train.log_every == 0 or step + 1 == total):
            log.write(json.dumps({"step": step + 1, "lr": lr, "sec_per_step": time.perf_counter() - t0,
                                  "cpu_sec_per_step": time.process_time() - c0, **logs}) + "\n")
            log.flush()
            bar.set_postfix(mae=f"{logs['mae']:.4f}")
    if rank == 0:
        log.close()
        save_encoder(model, args, out, ema.sync(model).state_dict())
    return out
