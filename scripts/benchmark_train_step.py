"""Seconds per optimiser step (forward, backward, AdamW) of a policy on random data shaped like a task, for several
config variants side by side: what a training epoch will cost before paying for one.

    python scripts/benchmark_train_step.py task=pusht_visual policies=[drifting,diffusion] \
        variants='{resnet18: [], conv: [policy.camera_trunk=conv]}' threads=1
"""

import statistics
import time

import hydra
import torch
from omegaconf import OmegaConf

from drifting_policy.config import compose_run_config, invoked_command
from drifting_policy.benchmark.latency import untrained_policy
from drifting_policy.utils.io import atomic_write_json


def random_batch(cfg, batch_size: int) -> dict:
    """Observations and actions shaped like the task's (rgb in [0, 1], low-dim standard normal)."""
    t, meta = cfg.task, cfg.task.shape_meta
    obs = {k: (torch.rand if m.get("type") == "rgb" else torch.randn)(batch_size, t.n_obs_steps, *m.shape)
           for k, m in meta.obs.items()}
    return {"obs": obs, "action": torch.randn(batch_size, t.horizon, *meta.action.shape)}


def time_steps(cfg, batch_size: int, steps: int) -> dict:
    policy = untrained_policy(cfg)
    batch = random_batch(cfg, batch_size)
    optim = torch.optim.AdamW(policy.parameters(), lr=1e-4)
    times = []
    for i in range(steps + 2):
        start = time.perf_counter()
        loss, _ = policy.compute_loss(batch)
        optim.zero_grad()
        loss.backward()
        optim.step()
        if i >= 2:
            times.append(time.perf_counter() - start)
    encoder = sum(p.numel() for p in policy.obs_encoder.parameters()) / 1e6
    return {"median_s": statistics.median(times), "min_s": min(times), "encoder_params_M": round(encoder, 3)}


@hydra.main(config_path="../configs/scripts", config_name="benchmark_train_step", version_base="1.3")
def main(args):
    torch.set_num_threads(args.threads)
    rows = []
    for name, overrides in (args.variants or {"default": []}).items():
        for policy in args.policies:
            cfg = compose_run_config(args.task, policy, args.scale, [str(o) for o in overrides])
            batch = args.batch_size or cfg.training.batch_size
            row = {"variant": name, "policy": policy, "batch_size": batch, "overrides": list(overrides)}
            row |= time_steps(cfg, batch, args.steps)
            rows.append(row)
            print(f"{name:24s} {policy:9s} batch {batch}: {row['median_s']:.3f} s/step (min {row['min_s']:.3f}), "
                  f"encoder {row['encoder_params_M']}M params", flush=True)
    if args.out:
        meta = {"torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                "command": invoked_command("benchmark_train_step.py")}
        atomic_write_json(args.out, {"meta": meta, "rows": OmegaConf.to_container(OmegaConf.create(rows))})


if __name__ == "__main__":
    main()
