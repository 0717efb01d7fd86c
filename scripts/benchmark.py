"""The side-by-side benchmark: drifting vs Diffusion Policy (DDPM-100 and DDIM-10 from the same checkpoints).

    python scripts/benchmark.py tasks=[pusht_state,lift_state] policies=[drifting,diffusion] seeds=[42,43,44] scale=cpu \
        [out=docs/benchmark/runs] [run_root=outputs/benchmark] [threads=1] [k=10] [report=docs/benchmark] \
        [train_overrides=[training.num_epochs=50,task.eval.n_test=10]]

Each (task, policy, seed) whose run file is missing from ``out`` is trained with the command a user types
(``python scripts/train_policy.py task=... policy=... scale=... seed=... run_dir=...``), identical across policies
but for ``policy=``; then the report is rebuilt from every run file in ``out``. Interrupt it and run it again to
continue: finished runs are skipped, an interrupted one resumes from its last checkpoint.
"""

from pathlib import Path

import hydra

import envs  # noqa: F401  (registers the task environments with gymnasium)
from drifting_policy.benchmark.report import build_report
from drifting_policy.benchmark.runner import benchmark_one
from drifting_policy.config import invoked_command

SET_PER_RUN = ("task=", "policy=", "seed=", "scale=", "run_dir=")  # the benchmark sets these itself


@hydra.main(config_path="../configs/scripts", config_name="benchmark", version_base="1.3")
def main(args):
    extra = [str(o) for o in args.train_overrides]
    if args.scale not in ("cpu", "paper"):
        raise SystemExit("scale must be cpu or paper (scale=auto would name runs by the machine they ran on)")
    bad = [o for o in extra if o.lstrip("+").startswith(SET_PER_RUN)] + sorted(set(args.policies) - {"drifting", "diffusion", "bc"})
    if bad:
        raise SystemExit(f"{bad}: task / policy / seed / scale / run_dir are set by the benchmark per run (use tasks=, "
                         "policies=, seeds=, scale=); policies are drifting, diffusion and/or bc")
    command, failed = invoked_command("benchmark.py"), []
    for task in args.tasks:
        for seed in args.seeds:
            for policy in args.policies:  # policies alternate per seed, so a suite cut short stays balanced
                try:
                    written = benchmark_one(task, policy, int(seed), args.scale, Path(args.out), Path(args.run_root),
                                            extra, threads=args.threads, keep_top_k=args.keep_top_k,
                                            suite_command=command)
                except (RuntimeError, FileNotFoundError, ValueError, KeyError) as e:  # one broken task must not
                    failed.append(f"{task} {policy} seed {seed}: {e}")                # stop the rest of the suite
                    print(f"FAILED {failed[-1]}", flush=True)
                    continue
                for path in written:
                    print(f"wrote {path}", flush=True)
    build_report(args.out, args.report, k=args.k, command=command)
    print(f"report: {Path(args.report) / 'README.md'}")
    if failed:
        raise SystemExit("failed runs (their files are missing; fix and run the same command again):\n" + "\n".join(failed))


if __name__ == "__main__":
    main()
