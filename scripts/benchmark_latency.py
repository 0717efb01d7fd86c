"""predict_action latency at batch 1: drifting (1 NFE) vs Diffusion Policy DDPM-100 and DDIM-10, for each task's
cpu-scale and paper-scale networks. Weights are freshly initialised (latency does not depend on their values).

    python scripts/benchmark_latency.py [tasks=[pusht_state,pusht_visual]] [threads=2] [device=cpu] [out=docs/benchmark/latency.json]
"""

import os
from pathlib import Path

import hydra
import torch

from drifting_policy.benchmark.latency import measure_latency, untrained_policy
from drifting_policy.config import compose_run_config, invoked_command
from drifting_policy.utils.io import atomic_write_json

HEADS = [("drifting", {}), ("diffusion", {"sampler": "ddpm", "num_inference_steps": 100}),
         ("diffusion", {"sampler": "ddim", "num_inference_steps": 10})]


@hydra.main(config_path="../configs/scripts", config_name="benchmark_latency", version_base="1.3")
def main(args):
    tasks = list(args.tasks)
    torch.set_num_threads(int(args.threads or os.cpu_count()))
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    rows = []
    for task in tasks:
        for scale in ("cpu", "paper"):
            for name, extra in HEADS:
                cfg = compose_run_config(task, name, scale)
                cfg.policy.update(extra)
                policy = untrained_policy(cfg)
                row = {"task": task, "scale": scale, "policy": name if name == "drifting" else extra["sampler"] +
                       f"-{extra['num_inference_steps']}", "down_dims": list(cfg.policy.down_dims)}
                row |= measure_latency(policy.to(device), n_warmup=3, n_calls=int(args.calls))
                rows.append(row)
                print(f"{task:14s} {scale:5s} {row['policy']:9s} predict {row['predict_action_ms']:9.2f} ms  encode "
                      f"{row['encode_ms']:7.2f}  generate {row['generate_ms']:9.2f}  backbone fwd "
                      f"{row['backbone_forward_ms']:7.2f}  NFE {row['nfe']:3d}  backbone {row['params_backbone_M']:.1f}M",
                      flush=True)
    out = Path(args.out)
    meta = {"device": str(device), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "command": invoked_command("benchmark_latency.py")}
    atomic_write_json(out, {"meta": meta, "rows": rows})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
