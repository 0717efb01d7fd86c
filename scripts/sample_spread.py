"""How stochastic is a trained policy? Spread of its samples per observation, in normalised action units.

    python scripts/sample_spread.py checkpoint=<checkpoint or run folder> [n_obs=64] [n_samples=16] [seed=0]

Draws n_obs training windows, generates n_samples action chunks for each, and prints the std over one observation's
samples (0 = deterministic), the RMS distance of their mean to the demonstrated chunk, and the same for a freshly
initialised network of the same config; the demos' spread over the batch is the scale to read them against.
A drifting policy whose per-observation std falls to ~0 has collapsed to regression (it averages the modes).
"""

import hydra
import torch

from drifting_policy.data.dataset import PolicyDataset, load_replay_buffer
from drifting_policy.factory import build_policy, load_policy


@torch.no_grad()
def spread(policy, obs: dict, demo: torch.Tensor, n_samples: int) -> dict:
    cond = policy.encode_obs(obs)
    x = torch.stack([policy.generate(cond) for _ in range(n_samples)], 1)  # (B, S, Tp, Da), normalised
    return {"std_per_obs": x.std(1).mean().item(), "mean_to_demo_rms": (x.mean(1) - demo).square().mean().sqrt().item()}


@hydra.main(config_path="../configs/scripts", config_name="sample_spread", version_base="1.3")
def main(args):
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    policy, cfg = load_policy(args.checkpoint)
    task = cfg.task
    ds = PolicyDataset(load_replay_buffer(task.dataset), task.shape_meta, task.dataset, task.n_obs_steps,
                       task.n_action_steps, task.horizon, cfg.seed)
    items = [ds[int(i)] for i in torch.randperm(len(ds))[: args.n_obs]]
    obs = {k: torch.stack([it["obs"][k] for it in items]) for k in items[0]["obs"]}
    demo = policy.normalized_action({"action": torch.stack([it["action"] for it in items])})
    fresh = build_policy(cfg).eval()
    fresh.normalizer.load_state_dict(policy.normalizer.state_dict())
    n = args.n_samples
    for name, p in (("initialised", fresh), ("trained", policy)):
        s = spread(p, obs, demo, n)
        print(f"{name:12s} std over {n} samples per observation {s['std_per_obs']:.4f}; "
              f"|sample mean - demo| rms {s['mean_to_demo_rms']:.4f}")
    print(f"{'demos':12s} std over the batch {demo.std(0).mean():.4f}")


if __name__ == "__main__":
    main()
