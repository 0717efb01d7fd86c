"""Diffusion Policy's reporting protocol as pure functions over plain dicts, and the benchmark's run files.

A run is one (task, policy variant, training seed) training. During training it is evaluated every N epochs on the
same 50 test seeds; each evaluation is one *record*::

    {"epoch": 100, "test/mean_score": 0.71, "test/success_rate": 0.40, "test/p1": 0.9, "test/p2": 0.4, ...}

DP reports, per run, over its evaluation checkpoints (records in epoch order):

    max          the best checkpoint's value                      (DP's "max")
    last_k_mean  the mean of the last k checkpoints (DP: k = 10)  (DP's "avg of last 10 checkpoints")

and across training seeds the mean of those (we add the sample standard deviation, ddof=1, and the per-seed values).
Every metric named ``test/mean_score``, ``test/success_rate`` or ``test/p<n>`` is aggregated the same way.

A *run file* (JSON, one per run, written by ``write_run`` atomically) holds::

    {"task": str, "policy": "drifting" | "diffusion", "variant": "drifting" | "ddpm100" | "ddim10", "seed": int,
     "scale": str, "overrides": [str], "command": str, "train_wall_s": float, "records": [record, ...], ...}
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from drifting_policy.utils.io import atomic_write_json

METRIC = re.compile(r"^test/(mean_score|success_rate|p\d+)$")
P_METRIC = re.compile(r"^test/p\d+$")
REQUIRED = ("task", "policy", "variant", "seed", "scale", "command", "records")


def eval_records(records: list[dict]) -> list[dict]:
    """The evaluation records (those with ``test/mean_score``) in epoch order; training-only records are dropped."""
    return sorted((r for r in records if "test/mean_score" in r), key=lambda r: r["epoch"])


def checkpoint_series(records: list[dict]) -> dict[str, list[float]]:
    """{metric: [value at each evaluation checkpoint, epoch order]} for the protocol's metrics.

    ``rollout.summarize`` only writes p_n up to the largest number of stages any episode completed when the task
    gives no ``n_stages``, so a p-metric absent from one checkpoint but present in another is 0 there (no episode
    reached n stages). Any other metric missing from a checkpoint is an error.
    """
    evals = eval_records(records)
    names = sorted({k for r in evals for k in r if METRIC.match(k)})
    series: dict[str, list[float]] = {}
    for name in names:
        values = []
        for r in evals:
            if name in r:
                values.append(float(r[name]))
            elif P_METRIC.match(name):
                values.append(0.0)
            else:
                raise KeyError(f"evaluation record of epoch {r.get('epoch')} lacks '{name}' (other epochs have it)")
        series[name] = values
    return series


def run_summary(records: list[dict], k: int = 10) -> dict[str, dict]:
    """One run: {metric: {"max": float, "last_k_mean": float, "n_checkpoints": int, "k": int}}.

    With fewer than k evaluation checkpoints the last-k mean is the mean over all of them (``k`` says how many).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    series = checkpoint_series(records)
    if not series:
        raise ValueError("no evaluation records (records with 'test/mean_score') to summarise")
    out = {}
    for name, values in series.items():
        tail = values[-k:]
        out[name] = {"max": max(values), "last_k_mean": float(np.mean(tail)), "n_checkpoints": len(values),
                     "k": len(tail)}
    return out


def seed_statistics(values: list[float]) -> dict:
    """{"mean", "std" (sample, ddof=1; None for one seed), "n", "values"} of one statistic over training seeds."""
    arr = np.asarray(values, dtype=float)
    std = float(arr.std(ddof=1)) if len(arr) > 1 else None
    return {"mean": float(arr.mean()), "std": std, "n": len(arr), "values": [float(v) for v in arr]}


def aggregate_seeds(summaries: list[dict[str, dict]]) -> dict[str, dict]:
    """Several runs' ``run_summary`` outputs (one per training seed) ->
    {metric: {"max": seed_statistics, "last_k_mean": seed_statistics}}.

    A p-metric that some seeds lack is 0 for them (see ``checkpoint_series``); other metrics must be in every run.
    """
    if not summaries:
        raise ValueError("no runs to aggregate")
    names = sorted({name for s in summaries for name in s})
    out = {}
    for name in names:
        missing = [i for i, s in enumerate(summaries) if name not in s]
        if missing and not P_METRIC.match(name):
            raise KeyError(f"metric '{name}' is missing from run(s) {missing} of the group")
        zero = {"max": 0.0, "last_k_mean": 0.0}
        out[name] = {stat: seed_statistics([s.get(name, zero)[stat] for s in summaries])
                     for stat in ("max", "last_k_mean")}
    return out


def group_key(run: dict) -> tuple:
    """Runs that differ only in the training seed: same task, variant, scale and extra overrides."""
    return run["task"], run["scale"], tuple(run.get("overrides", [])), run["variant"]


def aggregate_suite(runs: list[dict], k: int = 10) -> list[dict]:
    """Every group of runs -> {"task", "scale", "overrides", "variant", "policy", "seeds", "k",
    "metrics": aggregate_seeds(...), "per_seed": [run_summary], "train_wall_s" / "train_compute_s": seed_statistics,
    "num_epochs", "commands", "eval_commands", "suite_commands",
    "curve": {"epoch": [[per seed]], "mean_score": [[per seed]]}}, sorted by (task, scale, overrides, variant)."""
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        groups.setdefault(group_key(run), []).append(run)
    results = []
    for (task, scale, overrides, variant), members in sorted(groups.items()):
        members = sorted(members, key=lambda r: r["seed"])
        seeds = [r["seed"] for r in members]
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"{task}/{variant}/{scale}: seeds {seeds} repeat; one run file per seed")
        summaries = [run_summary(r["records"], k) for r in members]
        results.append({
            "task": task, "scale": scale, "overrides": list(overrides), "variant": variant,
            "policy": members[0]["policy"], "seeds": seeds, "k": k, "metrics": aggregate_seeds(summaries),
            "per_seed": summaries,
            "train_wall_s": _seconds([r.get("train_wall_s") for r in members]),
            "train_compute_s": _seconds([r.get("train_compute_s") for r in members]),
            "num_epochs": sorted({r.get("num_epochs") for r in members if r.get("num_epochs") is not None}),
            "commands": [r["command"] for r in members],
            "eval_commands": sorted({r["eval_command"] for r in members if r.get("eval_command")}),
            "suite_commands": sorted({r["suite_command"] for r in members if r.get("suite_command")}),
            "curve": {"epoch": [[e["epoch"] for e in eval_records(r["records"])] for r in members],
                      "mean_score": [[e["test/mean_score"] for e in eval_records(r["records"])] for r in members]},
        })
    return results


def _seconds(values: list) -> dict:
    """Seed statistics of a time that hand-made run files may lack (then mean and std are None: JSON has no NaN)."""
    if any(v is None for v in values):
        return {"mean": None, "std": None, "n": len(values), "values": values}
    return seed_statistics(values)


def write_run(path: str | Path, run: dict) -> Path:
    """Write a run file atomically (temp file in the same folder, then rename): a crash never leaves half a file."""
    missing = [key for key in REQUIRED if key not in run]
    if missing:
        raise KeyError(f"run for {path} lacks {missing}; a run file needs {list(REQUIRED)}")
    return atomic_write_json(path, run)


def load_runs(folder: str | Path) -> list[dict]:
    """All run files (``*.json``) of a folder, each checked for the required keys; ``_file`` says where it came from."""
    runs = []
    for path in sorted(Path(folder).glob("*.json")):
        try:
            run = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from e
        missing = [key for key in REQUIRED if key not in run]
        if missing:
            raise KeyError(f"{path} lacks key(s) {missing}; a run file needs {list(REQUIRED)}")
        if not isinstance(run["records"], list) or not eval_records(run["records"]):
            raise ValueError(f"{path}: 'records' must be a list holding evaluation records with 'test/mean_score'")
        runs.append(run | {"_file": str(path)})
    return runs
