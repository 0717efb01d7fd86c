"""Rebuild the benchmark report from the run files that exist (and the batch-1 latency JSON when present):

    python scripts/build_report.py [runs=docs/benchmark/runs] [out=docs/benchmark] [latency=docs/benchmark/latency.json]
        [k=10]

Writes <out>/README.md, <out>/results.json and <out>/plots/*.png.
"""

import shlex
import sys

from omegaconf import OmegaConf

from drifting_policy.benchmark.report import build_report

ALLOWED = {"runs", "out", "latency", "k"}


def main(argv):
    args = OmegaConf.to_container(OmegaConf.from_dotlist(argv))
    unknown = sorted(set(args) - ALLOWED)
    if unknown:
        sys.exit(f"unknown option(s) {unknown}; usage: build_report.py [{' '.join(f'{a}=...' for a in sorted(ALLOWED))}]")
    results = build_report(args.get("runs", "docs/benchmark/runs"), args.get("out", "docs/benchmark"),
                           args.get("latency"), k=int(args.get("k", 10)),
                           command=" ".join(["python scripts/build_report.py", shlex.join(argv)]).strip())
    print(f"{len(results['groups'])} groups from {args.get('runs', 'docs/benchmark/runs')}; "
          f"wrote {args.get('out', 'docs/benchmark')}/README.md")


if __name__ == "__main__":
    main(sys.argv[1:])
