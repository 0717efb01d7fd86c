"""Train a one-step drifting image generator (or the flow-matching baseline), torchrun-ready.

Per step N_c class labels are drawn for the whole (global) batch and split evenly over the processes; each class
gets N_gen generated samples, N_pos positives from its class queue and N_unc unconditional negatives from the
global queue, weighted for training-time CFG with a per-class alpha. One batched tensor holds all class groups.

    torchrun --nproc_per_node=2 scripts/train_image.py --config configs/image/fmnist_cpu.yaml
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from drifting_policy.image import data as D
from drifting_policy.image.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from drifting_policy.image.encoders import load_encoder
from drifting_policy.image.flow_matching import flow_matching_loss
from drifting_policy.image.models import build_dit, count_parameters
from drifting_policy.image.objective import drifting_objective
from drifting_policy.image.queue import QUEUE_DTYPES, ClassQueue, GlobalQueue, cfg_negative_weight, sample_cfg_alpha
from drifting_policy.utils.distributed import all_mean, broadcast_module, init_from_env, world

REQUIRED = ("method", "seed", "out_dir", "data", "model", "drift", "optim", "train")


def load_config(path: str, overrides: list[str] | None = None):
    cfg = OmegaConf.merge(OmegaConf.load(path), OmegaConf.from_dotlist(overrides or []))
    for key in REQUIRED:
        if key not in cfg:
            raise KeyError(f"{path}: missing top-level key {key!r} (expected {REQUIRED})")
    if cfg.method not in ("drifting", "flow_matching"):
        raise ValueError(f"{path}: method must be 'drifting' or 'flow_matching'; got {cfg.method!r}")
    return cfg


def mix(*ints: int) -> int:
    """A seed from several integers (SplitMix-style), so streams for (step, slot) never collide."""
    h = 0x9E3779B97F4A7C15
    for i in ints:
        h = ((h ^ (i + 0x632BE59BD9B4E019)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFF
    return h


def step_batch(cfg, step: int, model, class_q: ClassQueue, global_q: GlobalQueue, device) -> dict:
    """This rank's slice of the step's global batch. Labels, alphas and each class slot's noise depend only on
    (seed, step, slot), not on the number of processes; positives and negatives come from this rank's queues."""
    rank, size = world()
    dc, K = cfg.drift, cfg.data.num_classes
    n_c = dc.classes_per_step
    if n_c % size:
        raise ValueError(f"drift.classes_per_step={n_c} must be divisible by the world size {size}")
    g = torch.Generator().manual_seed(mix(cfg.seed, step))
    classes = torch.randperm(K, generator=g)[:n_c] if n_c <= K else torch.randint(0, K, (n_c,), generator=g)
    alphas = sample_cfg_alpha(n_c, dc.alpha_power, 1.0, dc.alpha_max, g) if dc.n_unc else torch.ones(n_c)
    local = slice(rank * (n_c // size), (rank + 1) * (n_c // size))
    classes, alphas = classes[local], alphas[local]
    noise, style = [], []
    for slot in range(local.start, local.stop):
        gs = torch.Generator(device).manual_seed(mix(cfg.seed, step, slot))
        n, s = model.random_inputs(dc.n_gen, gs, device)
        noise.append(n)
        style.append(s)
    gq = torch.Generator().manual_seed(mix(cfg.seed, step, 1 << 20, rank))
    n_real = dc.n_gen if cfg.method == "flow_matching" else dc.n_pos
    batch = {
        "labels": classes.to(device), "alpha": alphas.to(device),
        "noise": torch.stack(noise), "style": torch.stack(style),
        "pos": class_q.sample(classes, n_real, gq).to(device),
    }  # fmt: skip
    if dc.n_unc and cfg.method == "drifting":
        batch["neg"] = global_q.sample_groups(len(classes), dc.n_unc, gq).to(device)
        batch["neg_weight"] = cfg_negative_weight(batch["alpha"], dc.n_gen, dc.n_unc)
    return batch


def train_step(model, opt, encoder, batch: dict, cfg, step: int, ema: dict | None = None) -> dict:
    """One optimisation step on this rank's slice; with DDP the update equals one process on the global batch."""
    _, size = world()
    G, Ng = batch["noise"].shape[:2]
    device = batch["noise"].device
    labels = batch["labels"].repeat_interleave(Ng)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda" and cfg.train.bf16):
        if cfg.method == "drifting":
            gen = model(batch["noise"].flatten(0, 1), labels, batch["alpha"].repeat_interleave(Ng),
                        batch["style"].flatten(0, 1))
            ec = cfg.get("encoder") or {}
            loss, logs = drifting_objective(gen.unflatten(0, (G, Ng)), batch["pos"], batch.get("neg"),
                                            batch.get("neg_weight"), encoder, ec.get("use_raw", True),
                                            loc_max_size=ec.get("loc_max_size"))
            # Every rank's loss is the global mean; DDP averages gradients, so scale back up to their sum.
            scaled = loss * size
        else:
            gen_g = torch.Generator(device).manual_seed(mix(cfg.seed, step, 1 << 21, world()[0]))
            loss = flow_matching_loss(model, batch["pos"].flatten(0, 1), labels, gen_g)
            logs, scaled = {}, loss  # a plain per-rank mean: DDP's average is the global mean
    scaled.backward()
    oc = cfg.optim
    lr = oc.lr * min(1.0, (step + 1) / max(1, oc.warmup))
    for group in opt.param_groups:
        group["lr"] = lr
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), oc.grad_clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    if ema is not None:
        with torch.no_grad():
            params = dict(model.named_parameters())
            if isinstance(model, DistributedDataParallel):
                params = {k.removeprefix("module."): v for k, v in params.items()}
            # ema_warmup: decay (1 + step) / (10 + step) until it reaches optim.ema, so that early evaluations are
            # of a recent average rather than mostly of the initial weights (off: a constant decay from step 0)
            decay = min(oc.ema, (1 + step) / (10 + step)) if oc.get("ema_warmup", False) else oc.ema
            for k, v in ema.items():
                v.lerp_(params[k].detach(), 1.0 - decay)
    return {"loss": float(loss.detach()) if cfg.method == "drifting" else all_mean(float(loss.detach()), device),
            "lr": lr, "grad_norm": float(grad_norm), **logs}


def fill_queues(source, class_q: ClassQueue, global_q: GlobalQueue, need: int, push: int) -> None:
    with tqdm(desc="filling queues", disable=world()[0] != 0, leave=False) as bar:
        while not (class_q.is_full(need) and global_q.is_full(min(global_q.size, push))):
            x, y = source.next(push)
            class_q.push(x, y)
            global_q.push(x)
            bar.update(len(x))


def build_everything(cfg, device):
    rank, size = world()
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    dc = cfg.data
    model = build_dit(cfg.model.size, dc.num_classes, n_context=cfg.model.get("n_context", 16),
                      time_conditioned=cfg.method == "flow_matching").to(device)
    s = model.size
    if (s.channels, s.image_size) != (dc.channels, dc.image_size):
        raise ValueError(f"model.size {cfg.model.size} makes {s.channels}x{s.image_size}^2 samples but data is "
                         f"{dc.channels}x{dc.image_size}^2")
    enc_dir = cfg.get("encoder", {}).get("checkpoint")
    encoder = load_encoder(enc_dir, device) if (enc_dir and cfg.method == "drifting") else None
    if encoder is not None:
        broadcast_module(encoder)
    source = D.build_source(dc, cfg.seed + 7919 * rank, rank, size)
    shape = (dc.channels, dc.image_size, dc.image_size)
    qdtype = QUEUE_DTYPES[dc.get("queue_dtype", "float32")]
    class_q = ClassQueue(dc.num_classes, cfg.drift.class_queue, shape, qdtype)
    global_q = GlobalQueue(cfg.drift.global_queue, shape, qdtype)
    oc = cfg.optim
    opt = torch.optim.AdamW(model.parameters(), lr=oc.lr, betas=tuple(oc.betas), weight_decay=oc.weight_decay)
    return model, encoder, source, class_q, global_q, opt


def train(cfg) -> Path:
    device = init_from_env()
    rank, size = world()
    if cfg.get("eval") and cfg.eval.get("every"):
        clf = Path(cfg.eval.classifier) / "classifier.safetensors"
        if not clf.exists():  # fail now, not at the first evaluation an hour in
            raise FileNotFoundError(f"eval.classifier: {clf} missing; train it with scripts/sample_image.py "
                                    "--train-classifier DIR, or set eval.every=0")
    model, encoder, source, class_q, global_q, opt = build_everything(cfg, device)
    run = Path(cfg.out_dir)
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    start = 0
    ck = latest_checkpoint(run) if cfg.train.get("resume", True) else None
    if ck is not None:
        start, saved_ema, rs = load_checkpoint(ck, model, opt, rank, size)
        ema = {k: v.to(device) for k, v in saved_ema.items()}
        class_q.load_state_dict(rs, "class_q.")
        global_q.load_state_dict(rs, "global_q.")
        source.load_state_dict(rs)
    else:
        need = max(cfg.drift.n_pos, cfg.drift.n_gen if cfg.method == "flow_matching" else 0)
        fill_queues(source, class_q, global_q, need, cfg.data.push_per_step)
    if rank == 0:
        run.mkdir(parents=True, exist_ok=True)
        print(f"[train_image] {cfg.method} {cfg.model.size}: {count_parameters(model) / 1e6:.2f}M params, "
              f"world {size}, device {device}, start step {start}")
    net = DistributedDataParallel(model) if size > 1 else model
    log_f = open(run / "log.jsonl", "a") if rank == 0 else None
    bar = tqdm(range(start, cfg.train.steps), initial=start, total=cfg.train.steps, disable=rank != 0)
    config = OmegaConf.to_container(cfg, resolve=True)
    for step in bar:
        t0, c0 = time.perf_counter(), time.process_time()
        x, y = source.next(cfg.data.push_per_step)
        class_q.push(x, y)
        global_q.push(x)
        batch = step_batch(cfg, step, model, class_q, global_q, device)
        logs = train_step(net, opt, encoder, batch, cfg, step, ema)
        logs["sec_per_step"] = time.perf_counter() - t0
        logs["cpu_sec_per_step"] = time.process_time() - c0  # this process's CPU time: load-independent
        done = step + 1
        if rank == 0 and (done % cfg.train.log_every == 0 or done == cfg.train.steps):
            log_f.write(json.dumps({"step": done, **logs}) + "\n")
            log_f.flush()
            bar.set_postfix(loss=f"{logs['loss']:.4f}", s=f"{logs['sec_per_step']:.2f}")
        if not math.isfinite(logs["loss"]):
            raise FloatingPointError(f"non-finite loss at step {done}: {logs}")
        if done % cfg.train.ckpt_every == 0 or done == cfg.train.steps:
            rank_state = {**class_q.state_dict("class_q."), **global_q.state_dict("global_q."), **source.state_dict()}
            save_checkpoint(run, done, model, ema, opt, rank_state, config, rank, size)
            if rank == 0 and cfg.get("eval") and cfg.eval.get("every") and done % cfg.eval.every == 0:
                from drifting_policy.image.evaluate import evaluate_run

                metrics = evaluate_run(cfg, model, ema, done)
                log_f.write(json.dumps({"step": done, **metrics}) + "\n")
                log_f.flush()
    if log_f is not None:
        log_f.close()
    return run
