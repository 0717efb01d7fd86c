"""Time drifting_loss forward + backward on this machine (issue 2's batched-speed check).

    python scripts/benchmark_field.py [threads=1] [repeats=20] [device=cpu]

Prints the median (and min / max) wall time over repeats for the policy shape (B=256, Ng=8, Np=1, S=32) and the
image shape (B=64, Ng=64, Np=64, S=256), after warm-up calls.
"""

from __future__ import annotations

import statistics
import time

import hydra
import torch

from drifting_policy.field import drifting_loss

SHAPES = [  # (B, Ng, Np, S)
    (256, 8, 1, 32),
    (64, 64, 64, 256),
]


def time_once(gen: torch.Tensor, pos: torch.Tensor) -> float:
    x = gen.clone().requires_grad_()
    if x.is_cuda:
        torch.cuda.synchronize()
    t = time.perf_counter()
    loss, _ = drifting_loss(x, pos)
    loss.mean().backward()
    if x.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t


@hydra.main(config_path="../configs/scripts", config_name="benchmark_field", version_base="1.3")
def main(args) -> None:
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    print(f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}, "
          f"median of {args.repeats} after {args.warmup} warm-up calls")
    for B, Ng, Np, S in SHAPES:
        gen = torch.randn(B, Ng, S, generator=g).to(args.device)
        pos = torch.randn(B, Np, S, generator=g).to(args.device)
        for _ in range(args.warmup):
            time_once(gen, pos)
        times = [time_once(gen, pos) for _ in range(args.repeats)]
        print(f"B={B:4d} Ng={Ng:3d} Np={Np:3d} S={S:4d}: median {1e3 * statistics.median(times):8.2f} ms "
              f"(min {1e3 * min(times):.2f}, max {1e3 * max(times):.2f})")


if __name__ == "__main__":
    main()
