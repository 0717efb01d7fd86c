"""The benchmark report: from a folder of run files (and the batch-1 latency JSON when present) write

    <out>/README.md        the table (task x setting x policy: score max / last-k mean, seeds, training time,
                           latency), plots, fairness checks, and the command behind every number
    <out>/results.json     the aggregated numbers (protocol.aggregate_suite) + latency rows
    <out>/plots/*.png      score vs training epoch per task (all variants), latency bars

Everything is recomputed from the run files, so the report always matches whatever runs exist.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

from drifting_policy.benchmark.protocol import aggregate_suite, load_runs
from drifting_policy.benchmark.runner import overrides_tag
from drifting_policy.utils.io import atomic_write_text

VARIANT_ORDER = {"drifting": 0, "ddim10": 1, "ddpm100": 2, "bc": 3}


def latency_name(variant: str) -> str:
    """Run variant -> the latency JSON's policy name ('ddpm100' -> 'ddpm-100', 'drifting' stays)."""
    return re.sub(r"^([a-z]+)(\d+)$", r"\1-\2", variant)


def fmt(stat: dict | None, digits: int = 3) -> str:
    """Seed statistics -> 'mean ± std' ('mean' alone for one seed)."""
    if stat is None or stat["mean"] is None:
        return "–"
    if stat["std"] is None:
        return f"{stat['mean']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def setting(group: dict) -> str:
    """'cpu', or 'cpu +3 overrides (a1b2c3d4)' (the tag of the run folders; the overrides are under the commands)."""
    n = len(group["overrides"])
    return f"{group['scale']} +{n} override{'s' * (n > 1)} ({overrides_tag(group['overrides'])[2:]})" if n else group["scale"]


COMPUTE_RATIO = 1.5


def _comparable(part: str, value):
    """A fingerprint part without what may differ per policy on purpose (how often a run evaluates)."""
    if part == "eval" and isinstance(value, dict):
        return {k: v for k, v in value.items() if k != "every_epochs"}
    return value


def fairness(runs: list[dict]) -> list[str]:
    """Differences in data, backbone, budget or evaluation between policies trained for the same task/setting/seed."""
    by_key: dict[tuple, list[dict]] = {}
    for run in runs:
        if "fingerprint" in run:
            key = (run["task"], run["scale"], tuple(run.get("overrides", [])), run["seed"])
            by_key.setdefault(key, []).append(run)
    problems = []
    for (task, scale, _, seed), members in sorted(by_key.items()):
        ref = members[0]
        for other in members[1:]:
            for part, value in ref["fingerprint"].items():
                if _comparable(part, other["fingerprint"].get(part)) != _comparable(part, value):
                    problems.append(f"{task} ({scale}, seed {seed}): '{part}' differs between {ref['variant']} and "
                                    f"{other['variant']}")
        # epochs may differ per policy on purpose; the training compute they buy should not (DDIM shares DDPM's)
        trained = {r["policy"]: r.get("train_compute_s") for r in members if r.get("train_compute_s")}
        if len(trained) > 1 and max(trained.values()) > COMPUTE_RATIO * min(trained.values()):
            spent = ", ".join(f"{p} {s / 60:.1f} min" for p, s in sorted(trained.items()))
            problems.append(f"{task} ({scale}, seed {seed}): training compute differs by more than {COMPUTE_RATIO}x "
                            f"({spent})")
    return problems


def score_plot(task: str, groups: list[dict], path: Path) -> None:
    """Mean test score over seeds vs epoch for every variant/setting of a task; the band spans the seeds' min..max."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for g in groups:
        common = sorted(set.intersection(*[set(e) for e in g["curve"]["epoch"]]))
        table = [dict(zip(e, s)) for e, s in zip(g["curve"]["epoch"], g["curve"]["mean_score"])]
        values = np.array([[t[e] for e in common] for t in table])
        label = f"{g['variant']} ({setting(g)}, {len(g['seeds'])} seed{'s' * (len(g['seeds']) > 1)})"
        line = ax.plot(common, values.mean(0), marker="o", ms=3, label=label)[0]
        if len(values) > 1:
            ax.fill_between(common, values.min(0), values.max(0), color=line.get_color(), alpha=0.2)
    ax.set(xlabel="training epoch", ylabel="test mean score", title=task, ylim=(-0.02, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def latency_plot(rows: list[dict], path: Path) -> None:
    """predict_action at batch 1 per task and scale, one bar per policy, log scale (DDPM-100 is ~100x drifting)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = sorted({(r["task"], r["scale"]) for r in rows})
    policies = sorted({r["policy"] for r in rows}, key=lambda p: VARIANT_ORDER.get(p.replace("-", ""), 9))
    width = 0.8 / len(policies)
    fig, ax = plt.subplots(figsize=(max(5, 1.4 * len(settings)), 3.6))
    for i, pol in enumerate(policies):
        ms = {(r["task"], r["scale"]): r["predict_action_ms"] for r in rows if r["policy"] == pol}
        xs = [j + (i - (len(policies) - 1) / 2) * width for j in range(len(settings))]
        ax.bar(xs, [ms.get(s, 0) for s in settings], width, label=pol)
    ax.set_xticks(range(len(settings)), [f"{t}\n{s}" for t, s in settings], fontsize=7)
    ax.set(ylabel="predict_action ms (batch 1)", yscale="log")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build_report(runs_dir: str | Path, out: str | Path = "docs/benchmark", latency: str | Path | None = None,
                 k: int = 10, command: str | None = None) -> dict:
    """Write README.md, results.json and plots/ under ``out``; returns the results dict."""
    runs_dir, out = Path(runs_dir), Path(out)
    latency = Path(latency) if latency else out / "latency.json"
    runs = load_runs(runs_dir) if runs_dir.exists() else []
    groups = sorted(aggregate_suite(runs, k), key=lambda g: (g["task"], setting(g), VARIANT_ORDER.get(g["variant"], 9)))
    lat = json.loads(latency.read_text()) if latency.exists() else None
    lat_ms = {(r["task"], r["scale"], r["policy"]): r["predict_action_ms"] for r in (lat or {}).get("rows", [])}
    (out / "plots").mkdir(parents=True, exist_ok=True)
    tasks = sorted({g["task"] for g in groups})
    for task in tasks:
        score_plot(task, [g for g in groups if g["task"] == task], out / "plots" / f"score_{task}.png")
    if lat:
        latency_plot(lat["rows"], out / "plots" / "latency.png")
    problems = fairness(runs)
    results = {"generated": datetime.now(timezone.utc).isoformat(timespec="seconds"), "k": k,
               "runs_dir": str(runs_dir), "command": command, "groups": groups, "latency": lat, "fairness": problems}
    atomic_write_text(out / "results.json", json.dumps(results, indent=1))
    gpu = sorted(d.name for d in out.glob("gpu_*") if (d / "README.md").exists())
    atomic_write_text(out / "README.md", render(groups, lat, lat_ms, problems, tasks, runs_dir, k, command, gpu))
    return results


def render(groups, lat, lat_ms, problems, tasks, runs_dir, k, command, gpu=()) -> str:
    lines = ["# Benchmark: drifting policy vs Diffusion Policy", "",
             "Generated by `scripts/build_report.py` from the run files in "
             f"`{runs_dir}`{f' (`{command}`)' if command else ''}; do not edit by hand.", "",
             "Protocol (Diffusion Policy's): every run is evaluated every N epochs on the same test seeds (50 from "
             "100000 at full size), an episode's score is its maximum reward; per run we take the **max** over "
             f"evaluation checkpoints and the **mean of the last k = {k}** checkpoints (fewer when the run has fewer);"
             " the table shows their mean ± sample std over training seeds. DDIM-10 rows are the DDPM-trained "
             "Diffusion Policy checkpoints re-evaluated with 10 DDIM steps. Training time is the sum of the epochs' "
             "training time (evaluation excluded) per seed; wall is the whole training command, evaluations included.",
             ""]
    if not groups:
        lines += ["No run files yet: run `scripts/benchmark.py` (see docs/notes/benchmark.md).", ""]
    else:
        lines += ["| Task | Setting | Policy | Score max | Score last-k | Success max | Success last-k | p-metrics "
                  "(last-k) | Seeds | Epochs (evaluations) | Train time / seed | Wall / seed | Latency b=1 | Runs |",
                  "|" + "---|" * 14]
        for i, g in enumerate(groups):
            m = g["metrics"]
            ps = ", ".join(f"{name[5:]} {fmt(m[name]['last_k_mean'], 2)}" for name in m if re.match(r"test/p\d+$", name))
            compute = g.get("train_compute_s") or {}
            evals = "/".join(str(n) for n in sorted({r["test/mean_score"]["n_checkpoints"] for r in g["per_seed"]}))
            ms = lat_ms.get((g["task"], g["scale"], latency_name(g["variant"])))
            lines.append(
                f"| {g['task']} | {setting(g)} | {g['variant']} | {fmt(m['test/mean_score']['max'])} | "
                f"{fmt(m['test/mean_score']['last_k_mean'])} | {fmt(m.get('test/success_rate', {}).get('max'), 2)} | "
                f"{fmt(m.get('test/success_rate', {}).get('last_k_mean'), 2)} | {ps or '–'} | "
                f"{', '.join(map(str, g['seeds']))} | {'/'.join(map(str, g['num_epochs']))} ({evals} evals) | "
                f"{_minutes(compute)} | {_minutes(g['train_wall_s'])} | "
                f"{f'{ms:.1f} ms' if ms is not None else '–'} | [cmd](#runs-{i}) |")
        lines.append("")
        lines += ["## Score vs training epoch", ""]
        lines += [f"![{t}](plots/score_{t}.png)" for t in tasks] + [""]
    if lat:
        meta = lat.get("meta", {})
        lines += ["## Latency at batch 1", "",
                  f"`{meta.get('command', 'scripts/benchmark_latency.py')}` on {meta.get('device', '?')}, "
                  f"{meta.get('torch_threads', '?')} torch threads, torch {meta.get('torch', '?')}: median of many "
                  "`predict_action` calls after warm-up, freshly initialised weights.", "",
                  "| Task | Scale | Policy | predict_action ms | encode ms | generate ms | backbone fwd ms | NFE | "
                  "backbone params M |", "|" + "---|" * 9]
        for r in lat["rows"]:
            lines.append(f"| {r['task']} | {r['scale']} | {r['policy']} | {r['predict_action_ms']:.2f} | "
                         f"{r['encode_ms']:.2f} | {r['generate_ms']:.2f} | {r['backbone_forward_ms']:.2f} | "
                         f"{r['nfe']} | {r['params_backbone_M']:.1f} |")
        lines += ["", "![latency](plots/latency.png)", ""]
    else:
        lines += ["## Latency at batch 1", "", "No `latency.json` next to this page yet: run "
                  "`python scripts/benchmark_latency.py` (writes docs/benchmark/latency.json), then rebuild.", ""]
    if gpu:
        lines += ["GPU measurements (latency and training speed on a GPU machine): "
                  + ", ".join(f"[{name}]({name}/README.md)" for name in gpu) + ".", ""]
    lines += ["## Fairness checks", "",
              "Data, backbone (down_dims, kernel, groups, encoder), optimiser, evaluation protocol and horizons must "
              "be identical between the policies of every task/setting/seed; epochs, learning rate and evaluation "
              "frequency may differ per policy (configs/task_scale_policy/: a drifting step with G samples costs "
              f"several diffusion steps), so their measured training compute must agree within {COMPUTE_RATIO}x:", ""]
    compared = "- every pair of runs passes." if groups else "- no runs to compare yet."
    lines += [f"- {p}" for p in problems] or [compared]
    lines += [""]
    if groups:
        lines += ["## How each number was produced", ""]
        for i, g in enumerate(groups):
            lines += [f"<a id=\"runs-{i}\"></a>**{g['task']} / {setting(g)} / {g['variant']}**", ""]
            if g["overrides"]:
                lines += ["overrides: `" + " ".join(g["overrides"]) + "`", ""]
            lines += ["```"]
            lines += [f"# suite: {c}" for c in g.get("suite_commands", [])]
            lines += g["commands"]
            lines += [c for c in g.get("eval_commands", []) if c]
            lines += ["```", ""]
    return "\n".join(lines)


def _minutes(stat: dict | None) -> str:
    if not stat or stat.get("mean") is None:
        return "–"
    return f"{stat['mean'] / 60:.1f} min"
