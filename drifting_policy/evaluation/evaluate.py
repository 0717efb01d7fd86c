"""Evaluate a saved checkpoint: load its config and EMA weights, roll out, write JSON metrics and videos."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from omegaconf import OmegaConf

from drifting_policy.config import compose_run_config
from drifting_policy.evaluation.rollout import rollout, summarize
from drifting_policy.training.checkpoint import load_weights, resolve_checkpoint
from drifting_policy.training.trainer import build_policy, env_factory


def load_policy(checkpoint: str | Path, task: str | None = None, device: str = "cpu"):
    """(policy with EMA weights, config) from a checkpoint; ``task`` guards against evaluating on the wrong task."""
    folder = resolve_checkpoint(checkpoint)
    cfg = OmegaConf.load(folder / "config.yaml")
    if task is not None and task != cfg.task.name:
        raise ValueError(f"checkpoint {folder} was trained on task '{cfg.task.name}', not '{task}'")
    policy = build_policy(cfg)
    load_weights(policy, folder / "ema.safetensors")
    return policy.to(device).eval(), cfg


class RandomPolicy(torch.nn.Module):
    """Uniform actions from the environment's action space: the floor every score table should show."""

    def __init__(self, task_cfg):
        super().__init__()
        env = env_factory(task_cfg)()
        self.low, self.high = env.action_space.low, env.action_space.high
        env.close()
        self.shape_meta = OmegaConf.to_container(task_cfg.shape_meta, resolve=True)
        self.n_action_steps = task_cfg.n_action_steps
        self.generator = torch.Generator().manual_seed(0)

    def predict_action(self, obs):
        batch = next(iter(obs.values())).shape[0]
        u = torch.rand(batch, self.n_action_steps, len(self.low), generator=self.generator)
        return {"action": torch.as_tensor(self.low) + u * torch.as_tensor(self.high - self.low)}


def evaluate_checkpoint(checkpoint, n_episodes: int = 50, seed_start: int = 100000, n_videos: int = 2,
                        out: str | Path | None = None, task: str | None = None, sampler: str | None = None,
                        num_inference_steps: int | None = None, device: str = "cpu", sampling_seed: int | None = None) -> dict:
    """Roll the checkpoint's EMA policy out on ``n_episodes`` test seeds from ``seed_start``; deterministic: the
    policy's sampling is seeded with ``sampling_seed`` (default: the task's ``eval.sampling_seed``, as in training)."""
    if checkpoint == "random":
        if task is None:
            raise ValueError("checkpoint=random needs task=<name>")
        cfg = compose_run_config(task)
        policy = RandomPolicy(cfg.task)
        out = Path(out or f"outputs/{task}/random/eval")
    else:
        policy, cfg = load_policy(checkpoint, task, device)
    if sampler is not None:
        if not hasattr(policy, "set_sampler"):
            raise ValueError(f"policy '{cfg.policy.name}' has no sampler choice")
        policy.set_sampler(sampler, num_inference_steps or policy.num_inference_steps)
    if out is None:
        out = resolve_checkpoint(checkpoint).parent.parent / "eval" / resolve_checkpoint(checkpoint).name
    out = Path(out)
    resets = [{"seed": seed_start + i} for i in range(n_episodes)]
    if sampling_seed is None:
        sampling_seed = int(cfg.task.eval.get("sampling_seed", 0))
    results = rollout(policy, env_factory(cfg.task), resets, cfg.task.n_obs_steps, cfg.task.n_action_steps,
                      n_videos=n_videos, video_dir=out / "videos", batch_size=cfg.task.eval.get("batch_size", 50),
                      desc="eval", seed=sampling_seed)
    summary = summarize(results, cfg.task.eval.get("n_stages"), cfg.task.eval.get("mode_statistics"))
    summary |= {"checkpoint": checkpoint if checkpoint == "random" else str(resolve_checkpoint(checkpoint)),
                "task": cfg.task.name, "policy": "random" if checkpoint == "random" else cfg.policy.name,
                "seed_start": seed_start, "sampling_seed": sampling_seed, "torch_threads": torch.get_num_threads()}
    if sampler:
        summary |= {"sampler": sampler, "num_inference_steps": policy.num_inference_steps}
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "metrics.json.tmp"
    tmp.write_text(json.dumps({"summary": summary, "episodes": results}, indent=1))
    os.replace(tmp, out / "metrics.json")
    return summary
