"""A recipe study: named training recipes (candidates) x tasks x training seeds, each trained and evaluated through
the benchmark's own runner (``benchmark_one``: the command a user types, resumable, one run file per run), then
compared in one table and two plots (test score vs epoch, test score vs training CPU time).

Jobs come from a plain-text queue (one ``task candidate seed`` per line, ``#`` comments), so a study is planned in
stretches: append lines and start another worker; every worker takes the first job that has no run file and no
live lock, trains or resumes it, and moves on. Two workers on two cores run two jobs at once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from drifting_policy.benchmark.protocol import eval_records, load_runs, run_summary, seed_statistics
from drifting_policy.benchmark.runner import benchmark_one
from drifting_policy.utils.io import atomic_write_text

# Per task: the schedule every candidate shares (Diffusion Policy's cpu-scale epochs, frequent evaluations).
TASK_SETTINGS = {
    "pusht_state": ["training.num_epochs=120", "task.eval.every_epochs=10"],
    "can_state": ["training.num_epochs=64", "task.eval.every_epochs=8"],
    "lift_state": ["training.num_epochs=40", "task.eval.every_epochs=8"],
}
SKIP = ["policy.noise_skip=1.0", "policy.noise_skip_anneal=0.5"]
KNN = ["policy.positives=knn", "policy.knn_k=8", "training.neighbour_batches=8"]
# name -> (policy, overrides on top of the task's scale=cpu config)
CANDIDATES = {
    "ddpm": ("diffusion", []),
    "bc": ("bc", []),  # deterministic regression with the same backbone: what a head without sampling reaches
    "g8": ("drifting", ["policy.n_samples=8"]),
    "g4": ("drifting", ["policy.n_samples=4"]),
    "g8_skip": ("drifting", ["policy.n_samples=8", *SKIP]),
    "g4_skip": ("drifting", ["policy.n_samples=4", *SKIP]),
    "g4_skip_knn": ("drifting", ["policy.n_samples=4", *SKIP, *KNN]),
    # IDP-like: the neighbours' demos weighted by observation similarity (a Gaussian kernel)
    "g4_skip_knn_gauss": ("drifting", ["policy.n_samples=4", *SKIP, *KNN, "policy.knn_weighting=gaussian"]),
    # a wider U-Net (4x the parameters of the cpu scale's [32, 64, 128]): does the one-step generator lack capacity?
    "g4_wide": ("drifting", ["policy.n_samples=4", "policy.down_dims=[64,128,256]"]),
    "ddpm_wide": ("diffusion", ["policy.down_dims=[64,128,256]"]),
    # observation-noise augmentation for both heads (drifting peaks early and then overfits 90 demos, as BC does)
    "g4_obsnoise": ("drifting", ["policy.n_samples=4", "policy.obs_noise=0.02"]),
    "ddpm_obsnoise": ("diffusion", ["policy.obs_noise=0.02"]),
    # obs noise was ahead of every other drifting candidate at epoch 70-80 (0.878 / 0.860): more of it
    "g4_obsnoise05": ("drifting", ["policy.n_samples=4", "policy.obs_noise=0.05"]),
    "g4_skip_lr1e-3": ("drifting", ["policy.n_samples=4", *SKIP, "training.lr=1.0e-3"]),
    "g2_skip": ("drifting", ["policy.n_samples=2", *SKIP]),
}


def read_queue(path: Path) -> list[tuple[str, str, int]]:
    jobs = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        words = line.split("#")[0].split()
        if not words:
            continue
        if len(words) != 3 or words[0] not in TASK_SETTINGS or words[1] not in CANDIDATES or not words[2].isdigit():
            raise ValueError(f"{path}:{n}: expected 'task candidate seed' with task in {sorted(TASK_SETTINGS)} and "
                             f"candidate in {sorted(CANDIDATES)}; got '{line}'")
        jobs.append((words[0], words[1], int(words[2])))
    return jobs


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _claim(lock: Path) -> bool:
    """Create ``lock`` holding our pid; a lock whose process is gone is stale and taken over."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid = int(lock.read_text() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and _alive(pid):
                return False
            lock.unlink(missing_ok=True)
            continue
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return True
    return False


def run_dir_of(out: Path, candidate: str) -> Path:
    return Path(out) / candidate


def job_done(out: Path, task: str, candidate: str, seed: int) -> bool:
    policy = CANDIDATES[candidate][0]
    variant = "ddpm100" if policy == "diffusion" else policy
    return any(run_dir_of(out, candidate).glob(f"{task}__cpu__{variant}__seed{seed}*.json"))


def work(queue: Path, out: Path, run_root: Path, threads: int = 1) -> int:
    """Run queued jobs until none is left for this worker; returns how many it ran."""
    ran = 0
    while True:
        for task, candidate, seed in read_queue(queue):
            if job_done(out, task, candidate, seed):
                continue
            lock = Path(run_root) / "locks" / f"{task}__{candidate}__{seed}.lock"
            if not _claim(lock):
                continue
            try:
                policy, overrides = CANDIDATES[candidate]
                benchmark_one(task, policy, seed, "cpu", run_dir_of(out, candidate), Path(run_root) / candidate,
                              TASK_SETTINGS[task] + overrides, threads=threads,
                              suite_command=f"python scripts/recipe_study.py queue={queue} (job: {task} {candidate} {seed})")
            finally:
                lock.unlink(missing_ok=True)
            ran += 1
            break
        else:
            return ran


def _cpu_minutes(run: dict) -> list[float]:
    """Cumulative training CPU minutes at each evaluation record, from the run's training log: the committed copy
    beside its run file (``<run file>.metrics.jsonl``), else the run folder's."""
    log = Path(run["_file"]).with_suffix(".metrics.jsonl")
    if not log.exists():
        log = Path(run["run_dir"]) / "metrics.jsonl"
    if not log.exists():
        return [float("nan")] * len(eval_records(run["records"]))
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    cum, at_epoch = 0.0, {}
    for row in rows:
        cum += row.get("epoch_cpu_s", row.get("epoch_time_s", 0.0))
        at_epoch[row["epoch"]] = cum / 60
    return [at_epoch.get(r["epoch"], float("nan")) for r in eval_records(run["records"])]


def collect(out: Path, task: str, k: int) -> dict[str, dict]:
    """{candidate: {"runs", "max", "last_k", "final", "cpu_min", "curves"}} for the run files of ``task``."""
    table = {}
    for folder in sorted(p for p in Path(out).iterdir() if p.is_dir() and p.name in CANDIDATES):
        runs = [r for r in load_runs(folder) if r["task"] == task and r["variant"] in ("drifting", "ddpm100", "bc")]
        if not runs:
            continue
        runs.sort(key=lambda r: r["seed"])
        summaries = [run_summary(r["records"], k)["test/mean_score"] for r in runs]
        curves = [{"seed": r["seed"], "epoch": [e["epoch"] for e in eval_records(r["records"])],
                   "score": [e["test/mean_score"] for e in eval_records(r["records"])],
                   "success": [e["test/success_rate"] for e in eval_records(r["records"])],
                   "cpu_min": _cpu_minutes(r)} for r in runs]
        table[folder.name] = {
            "seeds": [r["seed"] for r in runs], "k": k, "commands": [r["command"] for r in runs],
            "max": seed_statistics([s["max"] for s in summaries]),
            "last_k": seed_statistics([s["last_k_mean"] for s in summaries]),
            "final": seed_statistics([c["score"][-1] for c in curves]),
            "cpu_min": seed_statistics([c["cpu_min"][-1] for c in curves]),
            "curves": curves,
        }
    return table


def score_at_cpu(curve: dict, budget_min: float) -> float | None:
    """The last evaluation whose cumulative training CPU time is within ``budget_min`` (None if none is)."""
    within = [s for s, c in zip(curve["score"], curve["cpu_min"]) if c <= budget_min * 1.02]
    return within[-1] if within else None


def plot(table: dict, task: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, (name, row) in enumerate(sorted(table.items())):
        color = f"C{i}"
        for j, c in enumerate(row["curves"]):
            label = f"{name} ({len(row['curves'])} seed{'s' if len(row['curves']) > 1 else ''})" if j == 0 else None
            axes[0].plot(c["epoch"], c["score"], "-o", color=color, ms=3, alpha=0.8, label=label)
            axes[1].plot(c["cpu_min"], c["score"], "-o", color=color, ms=3, alpha=0.8, label=label)
    axes[0].set_xlabel("epoch")
    axes[1].set_xlabel("training CPU minutes (one thread)")
    for ax in axes:
        ax.set_ylabel("test mean score (50 seeds)")
        ax.grid(alpha=0.3)
        ax.set_ylim(0, 1.02)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"{task}, cpu scale: recipe study")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fmt(stat: dict, digits: int = 3) -> str:
    if stat["std"] is None:
        return f"{stat['mean']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} +- {stat['std']:.{digits}f}"


def markdown(table: dict, task: str, plot_name: str) -> str:
    budget = table["ddpm"]["cpu_min"]["mean"] if "ddpm" in table else None
    lines = [f"### {task}", "", f"![score vs epoch and vs CPU time]({plot_name})", "",
             f"| candidate | seeds | max | last-{next(iter(table.values()))['k']} mean | final | training CPU min |"
             + (f" score at DDPM's CPU time ({budget:.0f} min) |" if budget else ""),
             "|---|---|---|---|---|---|" + ("---|" if budget else "")]
    for name, row in sorted(table.items(), key=lambda kv: -kv[1]["last_k"]["mean"]):
        cells = [name, ",".join(map(str, row["seeds"])), fmt(row["max"]), fmt(row["last_k"]), fmt(row["final"]),
                 fmt(row["cpu_min"], 0)]
        if budget:
            at = [score_at_cpu(c, budget) for c in row["curves"]]
            cells.append(fmt(seed_statistics([a for a in at if a is not None])) if any(a is not None for a in at)
                         else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def report(out: Path, doc: Path, k: int) -> str:
    """Rebuild ``doc`` (markdown tables) and its plots from the run files under ``out``."""
    parts, data = [], {}
    for task in TASK_SETTINGS:
        table = collect(out, task, k)
        if not table:
            continue
        plot_path = doc.parent / f"{doc.stem}_{task}.png"
        plot(table, task, plot_path)
        parts.append(markdown(table, task, plot_path.name))
        data[task] = {n: {key: v for key, v in row.items()} for n, row in table.items()}
    text = "\n".join(parts)
    begin, end = "<!-- study tables: begin -->", "<!-- study tables: end -->"
    old = doc.read_text() if doc.exists() else f"# Recipe study\n\n{begin}\n{end}\n"
    if begin not in old:
        old += f"\n{begin}\n{end}\n"
    new = old[: old.index(begin) + len(begin)] + "\n" + text + old[old.index(end):]
    atomic_write_text(doc, new)
    atomic_write_text(doc.parent / f"{doc.stem}.json", json.dumps(data, indent=1, default=float))
    return text

