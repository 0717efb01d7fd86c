"""One policy-agnostic training loop: AdamW, warmup + cosine, gradient clipping, EMA, periodic rollouts of the EMA
policy, top-k + last checkpoints and exact resume. Runs as one process or under ``torchrun`` (DDP: gloo on CPU,
nccl on GPU) with the same config; the global batch size stays ``training.batch_size``.

What a crash can and cannot do: an evaluation epoch is checkpointed BEFORE its rollouts (with its training metrics
as ``pending_eval``), so a crash in the rollouts loses no training and a resumed run evaluates that epoch first;
the score is then recorded by rewriting the checkpoint's ``state.json`` alone (utils/checkpoint.py), so ``last``
always names a complete checkpoint. A non-finite loss stops training before anything is saved.
"""

from __future__ import annotations

import math
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from diffusers.optimization import get_scheduler
from omegaconf import OmegaConf
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler
from tqdm import tqdm

from drifting_policy.data.dataset import PolicyDataset, load_replay_buffer
from drifting_policy.data.sampler import NeighbourBatchSampler, nearest_other_episode
from drifting_policy.evaluation.rollout import rollout, summarize
from drifting_policy.factory import build_policy, env_factory, env_mode_statistics
from drifting_policy.training.logger import RunLogger
from drifting_policy.utils import checkpoint as ckpt
from drifting_policy.utils.distributed import init_from_env, wants_cuda, world
from drifting_policy.utils.ema import EMA

# Config keys a resumed run may change: they do not alter what is trained.
RESUMABLE_CHANGES = ("training.resume", "training.overwrite", "training.num_workers", "training.checkpoint_top_k",
                     "task.eval", "logging", "device", "run_dir")


def evaluation_resets(cfg, buffer=None) -> list[dict]:
    """Test seeds (DP: 50 from 100000), then train inits replayed from demo start states when the task has them."""
    ev = cfg.task.eval
    resets = [{"seed": ev.test_start_seed + i} for i in range(ev.n_test)]
    key = cfg.task.dataset.get("init_state_key")
    if buffer is not None and key and ev.get("n_train", 0):
        starts = np.concatenate([[0], buffer.episode_ends[:-1]])[: ev.n_train]
        resets += [{"options": {"reset_to_state": buffer.data[key][s]}} for s in starts]
    return resets


def validate_training(t) -> None:
    for key in ("batch_size", "num_epochs"):
        if not isinstance(t[key], int) or t[key] < 1:
            raise ValueError(f"training.{key} must be a positive integer; got {t[key]!r}")
    if not t.lr > 0:
        raise ValueError(f"training.lr must be > 0; got {t.lr}")


class Trainer:
    def __init__(self, cfg):
        self.cfg, t = cfg, cfg.training
        validate_training(t)
        self.device = init_from_env(wants_cuda(cfg.device))
        self.rank, self.world = world()
        if t.batch_size % self.world:
            raise ValueError(f"training.batch_size {t.batch_size} must divide by the {self.world} processes")
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        self.run_dir = Path(cfg.run_dir)
        self.ckpt_root = self.run_dir / "checkpoints"
        self.config = OmegaConf.to_container(cfg, resolve=True)
        last = self._prepare_run_dir()

        self.buffer = load_replay_buffer(cfg.task.dataset)
        ds_args = (self.buffer, cfg.task.shape_meta, cfg.task.dataset, cfg.task.n_obs_steps, cfg.task.n_action_steps,
                   cfg.task.horizon, cfg.seed)
        self.train_set, self.val_set = PolicyDataset(*ds_args, split="train"), PolicyDataset(*ds_args, split="val")
        self.policy = build_policy(cfg).to(self.device)
        identity = cfg.task.get("normalizer_identity_dims")  # e.g. {action: [3, ..., 9]}: rot6d + gripper as they are
        identity = OmegaConf.to_container(identity, resolve=True) if identity else {}
        self.policy.normalizer.fit(self.train_set.normalizer_data(), identity)
        self.ema = EMA(self.policy, t.ema_max_decay, "power", t.ema_power)
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
        self.state = {"epoch": 0, "global_step": 0, "top_k": [], "run_id": None, "pending_eval": None}
        if last is not None:
            self._resume(last)
        self.logger = None
        if self.rank == 0:
            self.logger = RunLogger(self.run_dir, self.config, cfg.logging.wandb, run_id=self.state["run_id"])
            self.state["run_id"] = self.logger.run_id
            if t.resume:  # also without a checkpoint (killed during the first save): its epoch rows go
                # rows after the checkpoint go; so does the checkpoint's own epoch row when its evaluation is pending
                self.logger.truncate_after(self.state["global_step"], inclusive=self.state["pending_eval"] is None)
            if last is not None:
                print(f"resumed from {last} at epoch {self.state['epoch']}")

    # ------------------------------------------------------------------ run folder and resume
    def _prepare_run_dir(self) -> Path | None:
        """The checkpoint to resume from (None: a fresh run); refuses to overwrite a run by accident."""
        t = self.cfg.training
        has_run = self.ckpt_root.exists() or (self.run_dir / "metrics.jsonl").exists()
        if t.resume:
            if self.rank == 0 and self.ckpt_root.exists():  # a save or pruning killed half way: finish it first
                for line in ckpt.recover(self.ckpt_root):
                    print(f"{self.ckpt_root}: {line} (left by an interrupted run)")
            if self.world > 1:
                dist.barrier()
            return ckpt.find_last(self.ckpt_root) if self.ckpt_root.exists() else None
        if has_run and not t.get("overwrite", False):
            raise FileExistsError(f"{self.run_dir} already holds a run (checkpoints/ or metrics.jsonl). Continue it "
                                  "with training.resume=true, start over with training.overwrite=true (deletes its "
                                  "checkpoints, log and videos), or choose another run_dir")
        if has_run and self.rank == 0:
            for part in ("checkpoints", "videos", "eval"):
                shutil.rmtree(self.run_dir / part, ignore_errors=True)
            (self.run_dir / "metrics.jsonl").unlink(missing_ok=True)
        return None

    def _resume(self, folder: Path) -> None:
        ckpt.check_resumable(folder, self.config, RESUMABLE_CHANGES)
        ckpt.load_weights(self.policy, folder / "model.safetensors")
        self.ema.restore(ckpt.read_tensors(folder / "ema.safetensors"), ckpt.read_state(folder)["ema_step"])
        ckpt.load_optimizer(self.optimizer, folder)
        state = ckpt.read_state(folder)
        self.lr_scheduler.load_state_dict(state.pop("scheduler"))
        ckpt.set_rng_state(folder, state.pop("rng"))
        state.pop("ema_step")
        self.state = self.state | state

    # ------------------------------------------------------------------ training
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
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"non-finite training loss ({loss.item()}) at epoch {epoch + 1}, step {self.state['global_step'] + 1}: "
                    f"nothing was saved from this epoch; the last checkpoint in {self.ckpt_root} is from before it. "
                    "Check the data for NaN/Inf (the loaders validate actions and low-dim observations) and the lr")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if t.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.policy.parameters(), t.grad_clip)
            self.optimizer.step()
            self.lr_scheduler.step()
            self.ema.update(self.policy)
            self.state["global_step"] += 1
            self.policy.set_train_progress(self.state["global_step"] / self.total_steps)
            for k, v in ({"train_loss": loss.item()} | logs).items():
                sums[k] = sums.get(k, 0.0) + v
            bar.set_postfix(loss=f"{loss.item():.4f}")
        self.ema.sync(self.policy)
        return {k: v / len(loader) for k, v in sums.items()} | {"lr": self.lr_scheduler.get_last_lr()[0]}

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def validation_loss(self) -> float | None:
        if len(self.val_set) == 0:
            return None
        self.policy.eval()
        loader = DataLoader(self.val_set, batch_size=self.cfg.training.batch_size, shuffle=False)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(0)  # the loss's noise: the same every time, and training's random stream untouched
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
            results = rollout(self.ema.module, env_factory(self.cfg.task), chunk, self.cfg.task.n_obs_steps,
                              self.cfg.task.n_action_steps, n_videos=ev.n_videos if split == "test" else 0,
                              video_dir=self.run_dir / "videos" / f"epoch_{epoch:04d}",
                              batch_size=ev.get("batch_size", 50), desc=f"eval {split} epoch {epoch}",
                              seed=ev.get("sampling_seed", 0), n_workers=ev.get("n_workers", 0))
            stats = summarize(results, ev.get("n_stages"), env_mode_statistics(self.cfg.task))
            self._videos += [r["video"] for r in results if "video" in r]
            out |= {f"{split}/{k}": v for k, v in stats.items()}
        return out

    # ------------------------------------------------------------------ checkpoints
    def _save(self, epoch: int, pending: dict | None) -> Path:
        folder = self.ckpt_root / f"epoch_{epoch:04d}"
        state = self.state | {"epoch": epoch, "pending_eval": pending, "ema_step": self.ema.steps,
                              "scheduler": self.lr_scheduler.state_dict()}
        return ckpt.save_folder(folder, {"model": self.policy.state_dict(), "ema": self.ema.module.state_dict()},
                                self.config, state, self.optimizer)

    def _record_score(self, folder: Path, score: float) -> None:
        """The evaluation's score into the saved checkpoint's state (one atomic file), then the top-k pruning."""
        self.state["top_k"] = sorted(self.state["top_k"] + [[score, folder.name]], key=lambda x: -x[0])
        ckpt.update_state(folder, top_k=self.state["top_k"], pending_eval=None)
        self._prune(keep_also=folder.name)

    def _prune(self, keep_also: str) -> None:
        keep = {n for _, n in self.state["top_k"][: self.cfg.training.checkpoint_top_k]} | {keep_also}
        last = (self.ckpt_root / "last").resolve().name
        for folder in self.ckpt_root.glob("epoch_*"):
            if folder.name not in keep and folder.name != last and not folder.name.endswith(ckpt.UNFINISHED):
                ckpt.remove_folder(folder)  # never half-deleted under its own name

    def _evaluate_epoch(self, done: int, metrics: dict, folder: Path) -> None:
        metrics["val_loss"] = self.validation_loss()
        self._videos = []
        metrics |= self.evaluate(done)
        self.logger.log(metrics | {"epoch": done}, step=self.state["global_step"], videos=self._videos)
        self._record_score(folder, metrics["test/mean_score"])
        print(f"epoch {done}: test mean score {metrics['test/mean_score']:.3f}, "
              f"success {metrics['test/success_rate']:.2f}")

    def run(self) -> dict:
        t, ev = self.cfg.training, self.cfg.task.eval
        last_metrics: dict = {}
        pending, self.state["pending_eval"] = self.state["pending_eval"], None
        if pending is not None and self.rank == 0:  # killed during this epoch's evaluation: evaluate it first
            self._evaluate_epoch(self.state["epoch"], pending, ckpt.find_last(self.ckpt_root))
        elif self.state["global_step"] and self.rank == 0:  # killed before its last save's pruning ended
            self._prune(keep_also=ckpt.find_last(self.ckpt_root).name)
        for epoch in range(self.state["epoch"], t.num_epochs):
            start, cpu_start = time.time(), time.process_time()
            metrics = self.train_epoch(epoch)
            done = epoch + 1
            # wall and process-CPU seconds of the epoch's training steps (evaluation excluded): the compute budget
            metrics["epoch_time_s"], metrics["epoch_cpu_s"] = time.time() - start, time.process_time() - cpu_start
            self.state["epoch"] = done
            if self.rank == 0:
                evaluate = ev.n_test > 0 and (done % ev.every_epochs == 0 or done == t.num_epochs)
                if evaluate:
                    self._evaluate_epoch(done, metrics, self._save(done, pending=metrics))
                else:
                    self.logger.log(metrics | {"epoch": done}, step=self.state["global_step"])
                    if done % t.checkpoint_every == 0 or done == t.num_epochs:
                        self._prune(keep_also=self._save(done, pending=None).name)
            last_metrics = metrics
            if self.world > 1:
                dist.barrier()
        if self.logger:
            self.logger.close()
        return last_metrics
