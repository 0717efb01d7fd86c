"""Conditional multimodality study (issue 9): does a method keep every mode when each demo has ONE action?

    nice -n 10 python scripts/toy_multimodal.py [workers=2] [tasks=[balanced2,prop2,three]] [seeds=[0,1,2]]

o ~ U[0, 1], 2,000 demos, 2-D actions, a 3-layer MLP, 4k Adam steps, EMA weights. Methods: MSE-BC, DDPM (100
steps), drifting with per-observation positives (`self`, G in 2, 4, 8) and with the demos of the k nearest
observations in the batch (`knn`, k in 4, 16, G = 8), each also with the generator's noise input scaled by 4
("gain4"). Results go to docs/toys/multimodal_results.jsonl (one line
per run; finished runs are skipped on a rerun; several instances may append to it) and the first seed's samples to
multimodal_samples.jsonl; the table (multimodal.md) and multimodal.png are rebuilt from both files at the end
(`report_only=true` rebuilds them without training). Options: configs/scripts/toy_multimodal.yaml.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from pathlib import Path

import hydra
import numpy as np
import torch

from drifting_policy import toys

METHODS = {  # name -> train_conditional keyword arguments
    "mse": dict(method="mse"),
    "ddpm": dict(method="ddpm"),
    "self G=2": dict(method="drift", g=2, k=1),
    "self G=4": dict(method="drift", g=4, k=1),
    "self G=8": dict(method="drift", g=8, k=1),
    "knn k=4 G=8": dict(method="drift", g=8, k=4),
    "knn k=16 G=8": dict(method="drift", g=8, k=16),
    # the same generators with the noise input scaled by 4 (a wider initial output spread, as the 2-D toy needed)
    "self G=4 gain4": dict(method="drift", g=4, k=1, noise_gain=4.0),
    "self G=8 gain4": dict(method="drift", g=8, k=1, noise_gain=4.0),
    "knn k=4 G=8 gain4": dict(method="drift", g=8, k=4, noise_gain=4.0),
    "knn k=16 G=8 gain4": dict(method="drift", g=8, k=16, noise_gain=4.0),
    "self G=8 skip1": dict(method="drift", g=8, k=1, noise_skip=1.0),  # the policy's noise_skip: output + noise
    "self G=8 skip0.5": dict(method="drift", g=8, k=1, noise_skip=0.5),
    # skip 1 decayed linearly to 0 over the first half of training (the policy's noise_skip_anneal)
    "self G=8 skip1 anneal0.5": dict(method="drift", g=8, k=1, noise_skip=1.0, skip_anneal=0.5),
}
EVAL_OBS = torch.linspace(0.0025, 0.9975, 200)  # 200 observations x 64 samples each
PLOT_OBS = torch.tensor([0.1, 0.5, 0.9])


def run_one(job):
    task, name, seed, common = job
    torch.set_num_threads(1)
    t = time.time()
    sample = toys.train_conditional(task, seed=seed, **METHODS[name], **common)
    metrics = toys.multimodal_metrics(task, EVAL_OBS, sample(EVAL_OBS, 64), torch.Generator().manual_seed(seed))
    row = {"task": task, "method": name, "seed": seed, **metrics, "seconds": round(time.time() - t, 1)}
    return row, sample(PLOT_OBS, 100).numpy().round(3).tolist()


def table(rows: list[dict], tasks: list[str]) -> str:
    lines = ["| method | " + " | ".join(f"{t}: hit / between / mode TV / energy" for t in tasks) + " |",
             "|---|" + "---|" * len(tasks)]
    for name in METHODS:
        cells = []
        for task in tasks:
            rs = [r for r in rows if r["task"] == task and r["method"] == name]
            if not rs:
                cells.append("-")
                continue
            mean = {k: np.mean([r[k] for r in rs]) for k in ("hit", "between", "mode_tv", "energy")}
            kept = sum(r["hit"] >= 0.9 and r["between"] <= 0.1 for r in rs)
            hits = "/".join(f"{r['hit']:.2f}" for r in sorted(rs, key=lambda r: r["seed"]))
            cells.append(f"{mean['hit']:.2f} / {mean['between']:.2f} / {mean['mode_tv']:.2f} / {mean['energy']:.3f}"
                         f" (hit per seed {hits}; kept {kept}/{len(rs)})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(samples: dict, tasks: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(tasks), len(METHODS), figsize=(2.2 * len(METHODS), 2.3 * len(tasks)), squeeze=False)
    for i, task in enumerate(tasks):
        centres = toys.mode_centres(task, PLOT_OBS)
        for j, name in enumerate(METHODS):
            ax = axes[i, j]
            x = samples.get((task, name))
            for c, colour in enumerate(("tab:blue", "tab:orange", "tab:green")):
                if x is not None:
                    ax.scatter(*np.asarray(x[c]).T, s=2, alpha=0.3, color=colour)
                ax.scatter(*centres[c].T, marker="x", s=30, color="k")
            ax.set(xlim=(-1, 1), ylim=(-1, 1), xticks=[], yticks=[], aspect="equal")
            if i == 0:
                ax.set_title(name, fontsize=8)
            if j == 0:
                ax.set_ylabel(task, fontsize=8)
    fig.suptitle("samples at o = 0.1 / 0.5 / 0.9 (blue / orange / green), seed 0, EMA; x = true modes", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


@hydra.main(config_path="../configs/scripts", config_name="toy_multimodal", version_base="1.3")
def main(args) -> None:
    tasks, methods = list(args.tasks or toys.TASKS), list(args.methods or METHODS)
    unknown = sorted(set(tasks) - set(toys.TASKS)) + sorted(set(methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"unknown task(s) / method(s) {unknown}; tasks: {list(toys.TASKS)}, methods: {list(METHODS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results, sample_file = out / "multimodal_results.jsonl", out / "multimodal_samples.jsonl"

    def read(path):
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    done = {(r["task"], r["method"], r["seed"]) for r in read(results)}
    common = dict(steps=args.steps, batch=args.batch, hidden=args.hidden, lr=args.lr)
    jobs = [(t, m, s, common) for t in tasks for s in args.seeds for m in methods if (t, m, s) not in done]
    if args.report_only:
        jobs = []
    from tqdm import tqdm

    with mp.get_context("spawn").Pool(args.workers) as pool:
        for row, x in tqdm(pool.imap_unordered(run_one, jobs), total=len(jobs), desc="toy_multimodal runs"):
            with results.open("a") as f:
                f.write(json.dumps(row) + "\n")
            if row["seed"] == 0:
                with sample_file.open("a") as f:
                    f.write(json.dumps({"task": row["task"], "method": row["method"], "samples": x}) + "\n")
            print(json.dumps(row), flush=True)
    rows = list({(r["task"], r["method"], r["seed"]): r for r in reversed(read(results))}.values())  # first of repeats
    samples = {(r["task"], r["method"]): r["samples"] for r in read(sample_file)}
    tasks = [t for t in toys.TASKS if any(r["task"] == t for r in rows)]
    header = (f"Settings: {json.dumps(common)}, 2,000 demos, EMA 0.999, 200 eval observations x 64 samples.\n"
              "kept = runs with hit >= 0.9 and between <= 0.1.\n"
              "Cells: mean over seeds of hit / between / per-observation mode TV / energy distance.\n\n")
    (out / "multimodal.md").write_text(header + table(rows, tasks) + "\n")
    if samples:
        plot(samples, tasks, out / "multimodal.png")
    print(table(rows, tasks))


if __name__ == "__main__":
    main()
