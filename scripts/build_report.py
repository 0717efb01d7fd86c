"""Rebuild the benchmark report from the run files that exist (and the batch-1 latency JSON when present):

    python scripts/build_report.py [runs=docs/benchmark/runs] [out=docs/benchmark] [latency=docs/benchmark/latency.json]
        [k=10]

Writes <out>/README.md, <out>/results.json and <out>/plots/*.png.
"""

import hydra

from drifting_policy.benchmark.report import build_report
from drifting_policy.config import invoked_command


@hydra.main(config_path="../configs/scripts", config_name="build_report", version_base="1.3")
def main(args):
    results = build_report(args.runs, args.out, args.latency, k=args.k, command=invoked_command("build_report.py"))
    print(f"{len(results['groups'])} groups from {args.runs}; wrote {args.out}/README.md")


if __name__ == "__main__":
    main()
