"""Train a one-step drifting image generator (or the flow-matching baseline), torchrun-ready.

Per step N_c class labels are drawn for the whole (global) batch and split evenly over the processes; each class
gets N_gen generated samples, N_pos positives from its class queue and N_unc unconditional negatives from the
global queue, weighted for training-time CFG with a per-class alpha. One batched tensor holds all class groups.

Checkpoints are the package's checkpoint folders (utils/checkpoint.py): ``<out_dir>/checkpoints/step_XXXXXXXX/``
with the model, the EMA, the optimizer, each rank's queues and data stream (``rank_tensors``) and the world size;
a resumed run continues bit for bit as an uninterrupted one with the same number of processes.

    torchrun --nproc_per_node=2 scripts/train_image.py --config-name fmnist_cpu
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
from drifting_policy.image.encoders import load_encoder
from drifting_policy.image.flow_matching import flow_matching_loss
from drifting_policy.image.models import build_generator, count_parameters
from drifting_policy.image.objective import drifting_objective
from drifting_policy.image.queue import QUEUE_DTYPES, ClassQueue, GlobalQueue, cfg_negative_weight, sample_cfg_alpha
from drifting_policy.utils import checkpoint as ckpt
from drifting_policy.utils.distributed import all_mean, broadcast_module, init_from_env, wants_cuda, world
from drifting_policy.utils.ema import EMA
from drifting_policy.utils.io import truncate_jsonl_log

REQUIRED = ("method", "seed", "out_dir", "data", "model", "drift", "optim", "train")


def check_config(cfg) -> None:
    for key in REQUIRED:
        if key not in cfg:
            raise KeyError(f"image config: missing top-level key {key!r} (expected {REQUIRED})")
    if cfg.method not in ("drifting", "flow_matching"):
        raise ValueError(f"image config: method must be 'drifting' or 'flow_matching'; got {cfg.method!r}")


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


def train_step(model, opt, encoder, batch: dict, cfg, step: int, ema: EMA | None = None) -> dict:
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
        ema.update(model.module if isinstance(model, DistributedDataParallel) else model)
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
    model = build_generator(cfg).to(device)
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


def make_ema(cfg, model) -> EMA:
    """optim.ema_warmup: decay (1 + t) / (10 + t) up to optim.ema ("rampup"), so that early evaluations are of a
    recent average rather than of the first weights; off: the constant optim.ema ("constant")."""
    return EMA(model, cfg.optim.ema, "rampup" if cfg.optim.get("ema_warmup", False) else "constant")


def save_checkpoint(run: Path, step: int, model, ema: EMA, opt, queues: tuple, config: dict) -> Path:
    """Every rank calls it: rank 0 writes the shared files, each rank its queues and data stream."""
    rank, size = world()
    class_q, global_q, source = queues
    state = {"step": step, "world_size": size, "ema_step": ema.steps}
    return ckpt.save_folder(run / "checkpoints" / f"step_{step:08d}",
                            {"model": model.state_dict(), "ema": ema.sync(model).state_dict()}, config, state, opt,
                            {**class_q.state_dict("class_q."), **global_q.state_dict("global_q."), **source.state_dict()},
                            rank, size)


def load_checkpoint(folder: Path, model, ema: EMA, opt, queues: tuple) -> int:
    """Restore everything ``save_checkpoint`` wrote, in place; return the step to continue from."""
    rank, size = world()
    state = ckpt.read_state(folder)
    if state.get("world_size") != size:
        raise ValueError(f"{folder}/{ckpt.STATE}/state.json: world_size {state.get('world_size')}, but this run has "
                         f"{size} processes; exact resume needs the same number (queues and data streams are per "
                         "process): relaunch with that many, or start a new out_dir")
    ckpt.load_weights(model, folder / "model.safetensors")
    ckpt.load_weights(ema.module, folder / "ema.safetensors")
    ema.restore(ema.module.state_dict(), state["ema_step"])
    ckpt.load_optimizer(opt, folder)
    # Every draw of a step has its own generator (seeded by step, or saved per rank below), so the global
    # generators matter only to code outside the step; they continue rank 0's stream.
    ckpt.set_rng_state(folder, state["rng"])
    class_q, global_q, source = queues
    tensors = ckpt.read_rank_tensors(folder, rank)
    class_q.load_state_dict(tensors, "class_q.")
    global_q.load_state_dict(tensors, "global_q.")
    source.load_state_dict(tensors)
    return int(state["step"])


# config keys a resumed image run may change: they do not alter what is trained (the lr is constant after warmup,
# so train.steps only says where to stop)
IMAGE_RESUMABLE_CHANGES = ("train.steps", "train.resume", "train.log_every", "train.ckpt_every", "eval", "sample",
                           "threads", "device", "dry_run")


def find_resume_point(cfg, run: Path) -> Path | None:
    """The checkpoint to continue from (train.resume, the default), or None for a fresh run; refuses to train over
    an existing run with train.resume=false, and explains a run folder of the retired ``ckpt/`` format."""
    root = run / "checkpoints"
    if (run / "ckpt" / "last").exists() and not root.exists():
        raise FileExistsError(f"{run}/ckpt/ holds checkpoints of the retired image format; this version writes and "
                              f"resumes {root}/. Train into another out_dir")
    if not cfg.train.get("resume", True):
        if root.exists():
            raise FileExistsError(f"{root} exists and train.resume=false: continue it with train.resume=true, or "
                                  "choose another out_dir")
        return None
    if not root.is_dir():
        return None
    if world()[0] == 0:  # finish what a kill during a save left behind, before choosing where to resume
        for line in ckpt.recover(root):
            print(f"[train_image] {line}")
    if world()[1] > 1:
        torch.distributed.barrier()
    return ckpt.find_last(root)


def train(cfg) -> Path:
    check_config(cfg)
    device = init_from_env(wants_cuda(cfg.get("device", "auto")))
    rank, size = world()
    if cfg.get("eval") and cfg.eval.get("every"):
        clf = Path(cfg.eval.classifier) / "classifier.safetensors"
        if not clf.exists():  # fail now, not at the first evaluation an hour in
            raise FileNotFoundError(f"eval.classifier: {clf} missing; train it with scripts/sample_image.py "
                                    "sample.train_classifier=DIR, or set eval.every=0")
    model, encoder, source, class_q, global_q, opt = build_everything(cfg, device)
    queues = (class_q, global_q, source)
    run = Path(cfg.out_dir)
    ema = make_ema(cfg, model)
    last = find_resume_point(cfg, run)
    start = 0
    if last is not None:
        ckpt.check_resumable(last, OmegaConf.to_container(cfg, resolve=True), IMAGE_RESUMABLE_CHANGES)
        start = load_checkpoint(last, model, ema, opt, queues)
    else:
        need = max(cfg.drift.n_pos, cfg.drift.n_gen if cfg.method == "flow_matching" else 0)
        fill_queues(source, class_q, global_q, need, cfg.data.push_per_step)
    if rank == 0:
        run.mkdir(parents=True, exist_ok=True)
        truncate_jsonl_log(run / "log.jsonl", lambda s: s <= start)
        print(f"[train_image] {cfg.method} {cfg.model.size}: {count_parameters(model) / 1e6:.2f}M params, "
              f"world {size}, device {device}, start step {start}" + (f" ({last})" if last else ""))
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
            raise FloatingPointError(f"non-finite loss at step {done}: {logs}; the last checkpoint in "
                                     f"{run / 'checkpoints'} is from before it")
        if done % cfg.train.ckpt_every == 0 or done == cfg.train.steps:
            save_checkpoint(run, done, model, ema, opt, queues, config)
            if rank == 0 and cfg.get("eval") and cfg.eval.get("every") and done % cfg.eval.every == 0:
                from drifting_policy.image.evaluate import evaluate_run

                metrics = evaluate_run(cfg, ema.module, done)
                log_f.write(json.dumps({"step": done, **metrics}) + "\n")
                log_f.flush()
    if log_f is not None:
        log_f.close()
    return run
