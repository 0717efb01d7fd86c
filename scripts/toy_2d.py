"""Train a 2-D generator with drifting_loss on 8 Gaussians on a ring and on a checkerboard (issue 2).

    nice -n 10 python scripts/toy_2d.py [steps=3000] [groups=32] [n_gen=32] [n_pos=32] [seed=0]

Each step: `groups` independent drifting groups of n_gen generated samples against n_pos fresh data samples
(groups=1 is the plain single-group setting). Writes
docs/toys/toy_2d.png (one row per distribution: samples at evenly spaced steps, then the data) and prints the
metrics: per-mode fractions and the far fraction (> 0.5 from every centre) for the ring, the fraction on black
cells for the checkerboard.
"""

from __future__ import annotations

import time
from pathlib import Path

import hydra
import torch

from drifting_policy import toys


@hydra.main(config_path="../configs/scripts", config_name="toy_2d", version_base="1.3")
def main(args) -> None:
    torch.set_num_threads(args.threads)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(toys.DISTRIBUTIONS_2D)
    fig, axes = plt.subplots(len(names), args.snapshots + 1, figsize=(2.2 * (args.snapshots + 1), 2.3 * len(names)))
    for row, name in enumerate(names):
        sampler = toys.DISTRIBUTIONS_2D[name]
        t = time.time()
        _, snaps = toys.train_generator_2d(
            sampler, steps=args.steps, n_groups=args.groups, n_gen=args.n_gen, n_pos=args.n_pos, lr=args.lr,
            hidden=args.hidden, input_gain=args.input_gain, temperatures=tuple(args.temperatures), seed=args.seed,
            snapshot_every=args.steps // (args.snapshots - 1), n_snapshot=4000,
        )
        x = snaps[-1][1]
        if name == "ring8":
            fractions, far = toys.ring_mode_fractions(x)
            metric = f"far {far:.3f}, modes {fractions.min():.3f}-{fractions.max():.3f}"
        else:
            metric = f"on black cells {toys.checkerboard_fraction_inside(x):.3f}"
        print(f"{name}: {metric} ({time.time() - t:.0f} s, {args.steps} steps)", flush=True)
        data = sampler(4000, torch.Generator().manual_seed(123))
        for col, (step, samples) in enumerate(snaps[: args.snapshots] + [("data", data)]):
            ax = axes[row, col]
            ax.scatter(*samples.T, s=1, alpha=0.3, color="tab:gray" if step == "data" else "tab:blue")
            ax.set(xlim=(-3, 3), ylim=(-3, 3), xticks=[], yticks=[], aspect="equal")
            ax.set_title(f"{name} {step}" if step == "data" else f"step {step}", fontsize=8)
        axes[row, args.snapshots - 1].set_xlabel(metric, fontsize=7)
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
