"""Evaluate a saved checkpoint: load its EMA policy, roll it out on the test seeds, write JSON metrics and videos."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf

from drifting_policy.evaluation.rollout import rollout, summarize
from drifting_policy.factory import checkpoint_folder, env_factory, env_mode_statistics, load_policy, make_env
from drifting_policy.utils.io import atomic_write_json


class RandomPolicy(torch.nn.Module):
    """Uniform actions from the environment's action space: the floor every score table should show."""

    def __init__(self, task_cfg):
        super().__init__()
        env = make_env(task_cfg)
        self.low, self.high = env.action_space.low, env.action_space.high
        env.close()
        self.shape_meta = OmegaConf.to_container(task_cfg.shape_meta, resolve=True)
        self.n_action_steps = task_cfg.n_action_steps
        self.generator = torch.Generator().manual_seed(0)

    def predict_action(self, obs):
        batch = next(iter(obs.values())).shape[0]
        u = torch.rand(batch, self.n_action_steps, len(self.low), generator=self.generator)
        return {"action": torch.as_tensor(self.low) + u * torch.as_tensor(self.high - self.low)}


def evaluate_policy(policy, cfg, out: str | Path, n_episodes: int = 50, seed_start: int = 100000, n_videos: int = 2,
                    sampling_seed: int | None = None, trusted: bool = False, info: dict | None = None,
                    n_workers: int | None = None) -> dict:
    """Roll ``policy`` out on ``n_episodes`` test seeds from ``seed_start`` in the env of ``cfg.task``; write
    ``out/metrics.json`` (summary + episodes) and videos. Deterministic: the policy's sampling is seeded with
    ``sampling_seed`` (default: the task's ``eval.sampling_seed``, as in training); environments step in
    ``n_workers`` processes (default: the task's ``eval.n_workers``; the results do not depend on it). The output
    folder is created
    (and checked writable) before the rollouts, so a bad ``out`` fails in a second, not after them."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "metrics.json.writable", {})
    (out / "metrics.json.writable").unlink()
    if sampling_seed is None:
        sampling_seed = int(cfg.task.eval.get("sampling_seed", 0))
    resets = [{"seed": seed_start + i} for i in range(n_episodes)]
    results = rollout(policy, env_factory(cfg.task, trusted), resets, cfg.task.n_obs_steps, cfg.task.n_action_steps,
                      n_videos=n_videos, video_dir=out / "videos", batch_size=cfg.task.eval.get("batch_size", 50),
                      desc="eval", seed=sampling_seed, n_workers=cfg.task.eval.get("n_workers", 0)
                      if n_workers is None else n_workers)
    summary = summarize(results, cfg.task.eval.get("n_stages"), env_mode_statistics(cfg.task, trusted))
    summary |= (info or {}) | {"task": cfg.task.name, "seed_start": seed_start, "sampling_seed": sampling_seed,
                               "torch_threads": torch.get_num_threads()}
    atomic_write_json(out / "metrics.json", {"summary": summary, "episodes": results})
    return summary


def evaluate_checkpoint(checkpoint, n_episodes: int = 50, seed_start: int = 100000, n_videos: int = 2,
                        out: str | Path | None = None, task: str | None = None, sampler: str | None = None,
                        num_inference_steps: int | None = None, device: str = "cpu",
                        sampling_seed: int | None = None, n_workers: int | None = None) -> dict:
    """``evaluate_policy`` for a checkpoint's EMA weights (DDPM / DDIM chosen with ``sampler``); ``out`` defaults to
    ``<run>/eval/<checkpoint name>``. Nothing the checkpoint's config names is imported or executed."""
    policy, cfg = load_policy(checkpoint, task, device)
    folder = checkpoint_folder(checkpoint) if not (Path(checkpoint) / "model.safetensors").is_file() else Path(checkpoint)
    info = {"checkpoint": str(folder), "policy": cfg.policy.name}
    if sampler is not None:
        if not hasattr(policy, "set_sampler"):
            raise ValueError(f"policy '{cfg.policy.name}' has no sampler choice")
        policy.set_sampler(sampler, num_inference_steps or policy.num_inference_steps)
        info |= {"sampler": sampler, "num_inference_steps": policy.num_inference_steps}
    out = Path(out) if out is not None else folder.parent.parent / "eval" / folder.name
    return evaluate_policy(policy, cfg, out, n_episodes, seed_start, n_videos, sampling_seed, trusted=False, info=info,
                           n_workers=n_workers)


def evaluate_random(task_cfg_root, out: str | Path, n_episodes: int = 50, seed_start: int = 100000,
                    n_videos: int = 2) -> dict:
    """The uniform-random floor of a task (``task_cfg_root``: a composed run config)."""
    policy = RandomPolicy(task_cfg_root.task)
    return evaluate_policy(policy, task_cfg_root, out, n_episodes, seed_start, n_videos, trusted=True,
                           info={"checkpoint": "random", "policy": "random"})
