"""Wall clock of one evaluation with its environments stepped serially (in this process) and in worker processes,
on the same policy and test seeds; checks that every episode's result is identical.

    python scripts/benchmark_eval.py task=lift_visual n_episodes=50 workers=[0,2] \
        [checkpoint=outputs/lift_visual/drifting/seed42] [out=docs/benchmark/eval_workers_lift_visual.json]
"""

import tempfile
import time
from pathlib import Path

import hydra
import torch

import envs  # noqa: F401  (registers the task environments with gymnasium)
from drifting_policy.benchmark.latency import untrained_policy
from drifting_policy.config import compose_run_config, invoked_command
from drifting_policy.evaluation.evaluate import evaluate_policy
from drifting_policy.factory import load_policy
from drifting_policy.utils.io import atomic_write_json, read_json


def close(x, y, rel: float = 1e-12) -> bool:
    """Equal, floats within ``rel``: PushT's coverage (a shapely / GEOS polygon intersection) can differ in its last
    bit between two processes even for serial runs of the same state."""
    if isinstance(x, float) and isinstance(y, float):
        return abs(x - y) <= rel * max(abs(x), abs(y), 1.0)
    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(close(x[k], y[k], rel) for k in x)
    if isinstance(x, list) and isinstance(y, list):
        return len(x) == len(y) and all(close(a, b, rel) for a, b in zip(x, y))
    return x == y


@hydra.main(config_path="../configs/scripts", config_name="benchmark_eval", version_base="1.3")
def main(args):
    torch.set_num_threads(args.threads)
    if args.checkpoint:
        policy, cfg = load_policy(args.checkpoint, args.task)
    else:
        cfg = compose_run_config(args.task, args.policy, args.scale)
        policy = untrained_policy(cfg)
    if args.max_steps is not None:
        cfg.task.env.max_steps = int(args.max_steps)
    if args.batch_size is not None:
        cfg.task.eval.batch_size = int(args.batch_size)
    with tempfile.TemporaryDirectory() as tmp:  # warm-up: imports, simulator assets, allocator (forked workers share it)
        evaluate_policy(policy, cfg, tmp, 1, args.seed_start, n_videos=0, trusted=True, n_workers=0)
    rows, episodes = [], {}
    for workers in args.workers:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            summary = evaluate_policy(policy, cfg, tmp, args.n_episodes, args.seed_start, n_videos=0, trusted=True,
                                      n_workers=int(workers))
            wall = time.perf_counter() - start
            episodes[workers] = read_json(Path(tmp) / "metrics.json")["episodes"]
        rows.append({"workers": int(workers), "wall_s": round(wall, 1), "mean_score": summary["mean_score"],
                     "steps": sum(e["length"] for e in episodes[workers])})
        print(f"workers {workers}: {wall:7.1f} s wall, {rows[-1]['steps']} env steps, "
              f"mean score {summary['mean_score']:.3f}", flush=True)
    base = args.workers[0]
    identical = {str(w): episodes[w] == episodes[base] for w in args.workers}
    within = {str(w): close(episodes[w], episodes[base]) for w in args.workers}
    for row in rows:
        row["speedup"] = round(rows[0]["wall_s"] / row["wall_s"], 2)
        w = str(row["workers"])
        print(f"workers {w}: {row['speedup']:.2f}x the wall clock of workers {base}; per-episode results "
              f"bit-identical: {identical[w]}, equal within 1e-12: {within[w]}")
    if args.out:
        meta = {"task": cfg.task.name, "policy": cfg.policy.name, "checkpoint": args.checkpoint,
                "n_episodes": args.n_episodes, "seed_start": args.seed_start, "max_steps": cfg.task.env.max_steps,
                "batch_size": cfg.task.eval.get("batch_size", 50), "torch_threads": torch.get_num_threads(),
                "command": invoked_command("benchmark_eval.py")}
        atomic_write_json(args.out, {"meta": meta, "rows": rows, "bit_identical_results": identical,
                                     "results_equal_within_1e-12": within})
        print(f"wrote {args.out}")
    for w in args.workers:
        for i, (x, y) in enumerate(zip(episodes[base], episodes[w])):
            if x != y:
                print(f"episode {i}: workers {base} vs {w} differ in", {k: (x.get(k), y.get(k)) for k in x | y
                                                                      if x.get(k) != y.get(k)})
    if not all(within.values()):
        raise SystemExit("per-episode results differ between worker settings")


if __name__ == "__main__":
    main()
