"""The drifting recipe study (issue 15): candidates x tasks x seeds at cpu scale, through the benchmark runner.

    python scripts/recipe_study.py queue=docs/notes/recipe_study_queue.txt [workers=2] [threads=1]
        [out=docs/results/recipe_study] [run_root=outputs/recipe_study]
    python scripts/recipe_study.py report_only=true [out=docs/results/recipe_study] [doc=docs/notes/recipe_study.md] [k=5]

The queue holds one ``task candidate seed`` per line (candidates: drifting_policy/benchmark/study.py). Each worker
takes the next job with no run file and no live lock; kill and rerun to continue (runs resume). ``report_only``
rebuilds the tables and plots in ``doc`` from the run files.
"""

import multiprocessing
from pathlib import Path

import hydra

import envs  # noqa: F401  (registers the task environments with gymnasium)
from drifting_policy.benchmark.study import report, work


@hydra.main(config_path="../configs/scripts", config_name="recipe_study", version_base="1.3")
def main(args):
    out = Path(args.out)
    if args.report_only:
        print(report(out, Path(args.doc), args.k))
        return
    jobs = (Path(args.queue), out, Path(args.run_root), args.threads)
    workers = [multiprocessing.Process(target=work, args=jobs) for _ in range(args.workers)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


if __name__ == "__main__":
    main()
