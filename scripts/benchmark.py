"""The side-by-side benchmark: drifting vs Diffusion Policy (DDPM-100 and DDIM-10 from the same checkpoints).

    python scripts/benchmark.py tasks=pusht_state,lift_state policies=drifting,diffusion[,bc] seeds=42,43,44 scale=cpu \
        [out=docs/benchmark/runs] [run_root=outputs/benchmark] [threads=1] [k=10] [report=docs/benchmark] \
        [any train_policy.py override, e.g. training.num_epochs=50 task.eval.n_test=10]

Each (task, policy, seed) whose run file is missing from ``out`` is trained with the command a user types
(``python scripts/train_policy.py task=... policy=... scale=... seed=... run_dir=...``), identical across policies
but for ``policy=``; then the report is rebuilt from every run file in ``out``. Interrupt it and run it again to
continue: finished runs are skipped, an interrupted one resumes from its last checkpoint.
"""

import shlex
import sys
from pathlib import Path

import envs  # noqa: F401  (registers the task environments with gymnasium)
from drifting_policy.benchmark.report import build_report
from drifting_policy.benchmark.runner import benchmark_one

OWN = {"tasks", "policies", "seeds", "scale", "out", "run_root", "threads", "k", "report", "keep_top_k"}
FORBIDDEN = {"task", "policy", "seed", "scale", "run_dir"}  # set per run by the benchmark itself


def main(argv):
    own, extra = {}, []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep:
            sys.exit(f"argument '{arg}' is not key=value; usage: see the docstring of {__file__}")
        if key in OWN:
            own[key] = value
        elif key.lstrip("+") in FORBIDDEN:
            sys.exit(f"'{key}' is set by the benchmark per run; use tasks=/policies=/seeds=/scale=")
        else:
            extra.append(arg)
    if "tasks" not in own:
        sys.exit("tasks=<name,...> is required (configs/task/*.yaml)")
    scale = own.get("scale", "cpu")
    if scale == "auto":
        sys.exit("scale=auto would name runs by the machine they ran on; say scale=cpu or scale=paper")
    policies = own.get("policies", "drifting,diffusion").split(",")
    bad = sorted(set(policies) - {"drifting", "diffusion", "bc"})
    if bad:
        sys.exit(f"policies must be drifting, diffusion and/or bc (the deterministic baseline), not {bad}")
    out, run_root = Path(own.get("out", "docs/benchmark/runs")), Path(own.get("run_root", "outputs/benchmark"))
    command = "python scripts/benchmark.py " + shlex.join(argv)
    failed = []
    for task in own["tasks"].split(","):
        for seed in [int(s) for s in own.get("seeds", "42,43,44").split(",")]:
            for policy in policies:  # policies alternate per seed, so a suite cut short stays balanced
                try:
                    written = benchmark_one(task, policy, seed, scale, out, run_root, extra,
                                            threads=int(own.get("threads", 1)),
                                            keep_top_k=int(own.get("keep_top_k", 5)), suite_command=command)
                except (RuntimeError, FileNotFoundError, ValueError, KeyError) as e:  # one broken task must not
                    failed.append(f"{task} {policy} seed {seed}: {e}")                # stop the rest of the suite
                    print(f"FAILED {failed[-1]}", flush=True)
                    continue
                for path in written:
                    print(f"wrote {path}", flush=True)
    report = Path(own.get("report", "docs/benchmark"))
    build_report(out, report, k=int(own.get("k", 10)), command=command)
    print(f"report: {report / 'README.md'}")
    if failed:
        sys.exit("failed runs (their files are missing; fix and run the same command again):\n" + "\n".join(failed))


if __name__ == "__main__":
    main(sys.argv[1:])
