"""One policy-agnostic training loop: AdamW, warmup + cosine, gradient clipping, EMA, periodic rollouts of the EMA
policy, top-k + last checkpoints and exact resume. Runs as one process or under ``torchrun`` (DDP: gloo on CPU,
nccl on GPU) with the same config; the global batch size stays ``training.batch_size``."""

from __future__ import annotations

import copy
import functools
import math
import os
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from omegaconf import OmegaConf
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler
from tqdm import tqdm

from drifting_policy.data.dataset import PolicyDataset, load_replay_buffer
from drifting_policy.data.sampler import NeighbourBatchSampler, nearest_other_episode
from drifting_policy.evaluation.rollout import rollout, summarize
from drifting_policy.policies import policy_class
from drifting_policy.training.checkpoint import load_training_state, save_checkpoint
from drifting_policy.training.logger import RunLogger


def build_policy(cfg):
    """The policy named by ``cfg.policy.name`` for ``cfg.task`` (weights random, normaliser unfitted)."""
    kwargs = OmegaConf.to_container(cfg.policy, resolve=True)
    name = kwargs.pop("name")
    task = cfg.task
    crop = OmegaConf.to_container(task.crop_shape, resolve=True) if task.get("crop_shape") else None
    return policy_class(name)(OmegaConf.to_container(task.shape_meta, resolve=True), task.n_obs_steps,
                              task.n_action_steps, task.horizon, crop_shape=crop, **kwargs)


def env_factory(task_cfg):
    """A zero-argument constructor of the task's environment."""
    import envs

    kwargs = OmegaConf.to_container(task_cfg.env.get("kwargs", {}), resolve=True)
    return functools.partial(envs.make_env, task_cfg.env.name, max_steps=task_cfg.env.max_steps, **kwargs)


def evaluation_resets(cfg, buffer=None) -> list[dict]:
    """Test seeds (DP: 50 from 100000), then train inits replayed from demo start states when the task has them."""
    ev = cfg.task.eval
    resets = [{"seed": ev.test_start_seed + i} for i in range(ev.n_test)]
    key = cfg.task.dataset.get("init_state_key")
    if buffer is not None and key and ev.get("n_train", 0):
        starts = np.concatenate([[0], buffer.episode_ends[:-1]])[: ev.n_train]
        resets += [{"options": {"reset_to_state": buffer.data[key][s]}} for s in starts]
    return resets


class Trainer:
    def __init__(self, cfg):
        self.cfg, t = cfg, cfg.training
        self.world = int(os.environ.get("WORLD_SIZE", 1))
        self.rank = int(os.environ.get("RANK", 0))
        use_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if use_cuda else "gloo")
        self.device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if use_cuda else "cpu")
        if t.batch_size % self.world:
            raise ValueError(f"training.batch_size {t.batch_size} must divide by the {self.world} processes")
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        self.run_dir = Path(cfg.run_dir)

        self.buffer = load_replay_buffer(cfg.task.dataset)
        ds_args = (self.buffer, cfg.task.shape_meta, cfg.task.dataset, cfg.task.n_obs_steps, cfg.task.n_action_steps,
                   cfg.task.horizon, cfg.seed)
        self.train_set, self.val_set = PolicyDataset(*ds_args, split="train"), PolicyDataset(*ds_args, split="val")
        self.policy = build_policy(cfg).to(self.device)
        identity = cfg.task.get("normalizer_identity_dims")  # e.g. {action: [3, ..., 9]}: rot6d + gripper as they are
        identity = OmegaConf.to_container(identity, resolve=True) if identity else {}
        self.policy.normalizer.fit(self.train_set.normalizer_data(), identity)
        self.ema_policy = copy.deepcopy(self.policy).requires_grad_(False)
        self.ema = EMAModel(self.policy.parameters(), power=t.ema_power, decay=t.ema_max_decay, use_ema_warmup=True,
                            inv_gamma=1.0, min_decay=0.0)
        self.optimizer = torch.optim.AdamW(self.policy.parameters(), lr=t.lr, betas=tuple(t.betas),
                                           weight_decay=t.weight_decay)
        self.steps_per_epoch = math.ceil(len(self.train_set) / t.batch_size)
        self.total_steps = self.steps_per_epoch * t.num_epochs
        if t.warmup_steps > 0.5 * self.total_steps:
            warnings.warn(f"training.warmup_steps = {t.warmup_steps} is more than half of the run's "
                          f"{self.total_steps} optimiser steps: the learning rate stays far below "
                          f"training.lr = {t.lr} for most of training; lower warmup_steps", stacklevel=2)
        self.lr_scheduler = get_scheduler(t.lr_scheduler, self.optimizer, num_warmup_steps=t.warmup_steps,
                                          num_training_steps=self.total_steps)
        self.model = DistributedDataParallel(self.policy) if self.world > 1 else self.policy
        self._neighbours = None  # built on first use by _neighbour_table (training.neighbour_batches)
        self.state = {"epoch": 0, "global_step": 0, "ema_step": 0, "top_k": [], "run_id": None}
        last = self.run_dir / "checkpoints" / "last"
        if t.resume and last.exists():
            self.state = load_training_state(last, self.policy, self.ema_policy, self.optimizer, self.lr_scheduler)
            self.ema = EMAModel(self.ema_policy.parameters(), power=t.ema_power, decay=t.ema_max_decay,
                                use_ema_warmup=True, inv_gamma=1.0, min_decay=0.0)
            self.ema.optimization_step = self.state["ema_step"]
        self.logger = None
        if self.rank == 0:
            self.logger = RunLogger(self.run_dir, OmegaConf.to_container(cfg, resolve=True), cfg.logging.wandb,
                                    run_id=self.state["run_id"])
            self.state["run_id"] = self.logger.run_id
            if self.state["global_step"]:
                self.logger.truncate_after(self.state["global_step"])
                print(f"resumed from {last.resolve()} at epoch {self.state['epoch']}")

    def _neighbour_table(self) -> np.ndarray:
        """Each training window's nearest windows from other episodes, in normalised low-dim observation space."""
        if self._neighbours is None:
            ds, keys = self.train_set, self.policy.obs_encoder.low_dim_keys
            if not keys:
                raise ValueError("training.neighbour_batches needs low-dim observation keys to find neighbours; "
                                 f"task '{self.cfg.task.name}' has only cameras")
            windows = {k: torch.from_numpy(np.stack([ds.sampler.sample(ds.obs[k], i, ds.n_obs_steps)
                                                     for i in range(len(ds))])) for k in keys}
            nobs = self.policy.normalizer.normalize_obs(windows)
            feats = torch.cat([nobs[k].flatten(1) for k in keys], dim=1).numpy()
            self._neighbours = nearest_other_episode(feats, ds.sampler.episode_of,
                                                     self.cfg.training.neighbour_batches - 1)
        return self._neighbours

    def _loader(self, epoch: int) -> DataLoader:
        t = self.cfg.training
        if t.get("neighbour_batches", 0):
            batches = NeighbourBatchSampler(self._neighbour_table(), t.batch_size, t.neighbour_batches,
                                            self.cfg.seed, epoch, self.rank, self.world)
            return DataLoader(self.train_set, batch_sampler=batches, num_workers=t.num_workers)
        if self.world > 1:
            sampler = DistributedSampler(self.train_set, self.world, self.rank, shuffle=True, seed=self.cfg.seed)
            sampler.set_epoch(epoch)
        else:  # seeded per epoch, so a resumed run sees the same batches as an uninterrupted one
            sampler = RandomSampler(self.train_set, generator=torch.Generator().manual_seed(self.cfg.seed * 100003 + epoch))
        return DataLoader(self.train_set, batch_size=t.batch_size // self.world, sampler=sampler,
                          num_workers=t.num_workers, drop_last=False, persistent_workers=False)

    def _to_device(self, batch: dict) -> dict:
        return {"obs": {k: v.to(self.device, non_blocking=True) for k, v in batch["obs"].items()},
                "action": batch["action"].to(self.device, non_blocking=True)}

    def train_epoch(self, epoch: int) -> dict:
        t = self.cfg.training
        self.policy.train()
        sums: dict[str, float] = {}
        loader = self._loader(epoch)
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{t.num_epochs}", leave=False, disable=self.rank != 0)
        for batch in bar:
            loss, logs = self.model(self._to_device(batch))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if t.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.policy.parameters(), t.grad_clip)
            self.optimizer.step()
            self.lr_scheduler.step()
            self.ema.step(self.policy.parameters())
            self.state["global_step"] += 1
            for policy in (self.policy, self.ema_policy):
                policy.set_train_progress(self.state["global_step"] / self.total_steps)
            for k, v in ({"train_loss": loss.item()} | logs).items():
                sums[k] = sums.get(k, 0.0) + v
            bar.set_postfix(loss=f"{loss.item():.4f}")
        self.state["ema_step"] = self.ema.optimization_step
        self.ema.copy_to(self.ema_policy.parameters())
        return {k: v / len(loader) for k, v in sums.items()} | {"lr": self.lr_scheduler.get_last_lr()[0]}

    @torch.no_grad()
    def validation_loss(self) -> float | None:
        if len(self.val_set) == 0:
            return None
        self.policy.eval()
        loader = DataLoader(self.val_set, batch_size=self.cfg.training.batch_size, shuffle=False)
        losses = [self.policy.compute_loss(self._to_device(b))[0].item() for b in loader]
        return float(np.mean(losses))

    def evaluate(self, epoch: int) -> dict:
        """Roll out the EMA policy on the test seeds, then (in a second, separate rollout) the train inits.

        Each rollout seeds its own sampling (``task.eval.sampling_seed``), so an epoch's test metrics equal what
        ``eval_policy.py`` gives for that epoch's checkpoint on the same seeds, whatever the training RNG did."""
        ev = self.cfg.task.eval
        resets = evaluation_resets(self.cfg, self.buffer)
        out = {}
        for split, chunk in (("test", [r for r in resets if "seed" in r]), ("train", [r for r in resets if "seed" not in r])):
            if not chunk:
                continue
            results = rollout(self.ema_policy, env_factory(self.cfg.task), chunk, self.cfg.task.n_obs_steps,
                              self.cfg.task.n_action_steps, n_videos=ev.n_videos if split == "test" else 0,
                              video_dir=self.run_dir / "videos" / f"epoch_{epoch:04d}",
                              batch_size=ev.get("batch_size", 50), desc=f"eval {split} epoch {epoch}",
                              seed=ev.get("sampling_seed", 0))
            out |= {f"{split}/{k}": v for k, v in summarize(results, ev.get("n_stages"), ev.get("mode_statistics")).items()}
        return out

    def _checkpoint(self, epoch: int, score: float | None, pending: dict | None = None) -> None:
        """``pending``: the epoch's training metrics, saved BEFORE its evaluation so that a crash in the rollouts
        (an out-of-memory kill, a simulator error) loses no training; a resumed run evaluates that epoch first."""
        ckpt_dir = self.run_dir / "checkpoints"
        name = f"epoch_{epoch:04d}"
        if score is not None:
            self.state["top_k"] = sorted(self.state["top_k"] + [[score, name]], key=lambda x: -x[0])
        save_checkpoint(ckpt_dir / name, self.cfg, self.policy, self.ema_policy, self.optimizer, self.lr_scheduler,
                        self.state | {"epoch": epoch, "pending_eval": pending})
        keep = {n for _, n in self.state["top_k"][: self.cfg.training.checkpoint_top_k]} | {name}
        for folder in ckpt_dir.glob("epoch_*"):
            if folder.name not in keep and not folder.name.endswith(".tmp"):
                shutil.rmtree(folder)

    def _checkpoint_then_evaluate(self, done: int, metrics: dict) -> float:
        self._checkpoint(done, None, pending=metrics)
        metrics["val_loss"] = self.validation_loss()
        metrics |= self.evaluate(done)
        score = metrics["test/mean_score"]
        print(f"epoch {done}: test mean score {score:.3f}, success {metrics['test/success_rate']:.2f}")
        return score

    def run(self) -> dict:
        t, ev = self.cfg.training, self.cfg.task.eval
        last_metrics: dict = {}
        pending = self.state.pop("pending_eval", None)
        if pending is not None and self.rank == 0 and ev.n_test > 0:  # killed during this epoch's evaluation
            done = self.state["epoch"]
            score = self._checkpoint_then_evaluate(done, pending)
            self.logger.log(pending | {"epoch": done}, step=self.state["global_step"])
            self._checkpoint(done, score)
        for epoch in range(self.state["epoch"], t.num_epochs):
            start, cpu_start = time.time(), time.process_time()
            metrics = self.train_epoch(epoch)
            done = epoch + 1
            # wall and process-CPU seconds of the epoch's training steps (evaluation excluded): the compute budget
            metrics["epoch_time_s"], metrics["epoch_cpu_s"] = time.time() - start, time.process_time() - cpu_start
            score = None
            if self.rank == 0:
                if ev.n_test > 0 and (done % ev.every_epochs == 0 or done == t.num_epochs):
                    score = self._checkpoint_then_evaluate(done, metrics)
                self.logger.log(metrics | {"epoch": done}, step=self.state["global_step"])
                if done % t.checkpoint_every == 0 or done == t.num_epochs or score is not None:
                    self._checkpoint(done, score)
            self.state["epoch"] = done
            last_metrics = metrics
            if self.world > 1:
                dist.barrier()
        if self.logger:
            self.logger.close()
        return last_metrics
