"""The drifting recipe study (issue 15): candidates x tasks x seeds at cpu scale, through the benchmark runner.

    python scripts/recipe_study.py queue=docs/notes/recipe_study_queue.txt [workers=2] [threads=1]
        [out=docs/results/recipe_study] [run_root=outputs/recipe_study]
    python scripts/recipe_study.py report [out=docs/results/recipe_study] [doc=docs/notes/recipe_study.md] [k=5]

The queue holds one ``task candidate seed`` per line (candidates: drifting_policy/evaluation/study.py). Each worker
takes the next job with no run file and no live lock; kill and rerun to continue (runs resume). ``report`` rebuilds
the tables and plots in ``doc`` from the run files.
"""

import multiprocessing
import sys
from pathlib import Path

from omegaconf import OmegaConf

import envs  # noqa: F401  (registers the task environments with gymnasium)
from drifting_policy.benchmark.study import report, work

OWN = {"queue", "workers", "threads", "out", "run_root", "doc", "k"}


def main(argv):
    do_report = bool(argv) and argv[0] == "report"
    args = OmegaConf.to_container(OmegaConf.from_dotlist(argv[1:] if do_report else argv))
    unknown = sorted(set(args) - OWN)
    if unknown:
        sys.exit(f"unknown option(s) {unknown}; see: {__doc__}")
    out = Path(args.get("out", "docs/results/recipe_study"))
    if do_report:
        print(report(out, Path(args.get("doc", "docs/notes/recipe_study.md")), int(args.get("k", 5))))
        return
    if "queue" not in args:
        sys.exit(f"queue=FILE is required; see: {__doc__}")
    jobs = (Path(args["queue"]), out, Path(args.get("run_root", "outputs/recipe_study")), int(args.get("threads", 1)))
    workers = [multiprocessing.Process(target=work, args=jobs) for _ in range(int(args.get("workers", 2)))]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


if __name__ == "__main__":
    main(sys.argv[1:])
