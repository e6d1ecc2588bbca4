"""The report of a run directory, written again from what it holds.

    python -m smjax.report WORKDIR      (or smjax-report WORKDIR)

A `--regime all` directory gets `reports.run_report`'s report, a multi-seed study
(WORKDIR/seed<N>/) `reports.study`'s, ticket rounds `reports.tickets`'; all in WORKDIR/report/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import absl.logging

from smjax import checkpoint
from smjax.workdir import RunError


def write_report(workdir: str | Path, supermask_studies: list[Path] = ()) -> Path:
  """The report that fits what WORKDIR holds (a study: each seed's, then the aggregated one);
  returns its summary.md."""
  from smjax.reports import run_report, study, tickets
  from smjax.reports.runs import summarize
  if tickets.seeds_with_rounds(workdir):
    return tickets.write_report(workdir, supermask_studies)
  if seeds := study.seeds_with_runs(workdir):
    summaries = {seed: summarize(seed_dir) for seed, seed_dir in seeds.items()}
    for seed, seed_dir in seeds.items():
      run_report.write_report(seed_dir, summaries[seed])
    return study.write_report(workdir, summaries)
  return run_report.write_report(workdir)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("workdir")
  parser.add_argument("--supermasks", nargs="+", type=Path, default=[], metavar="STUDY",
                      help="ticket studies: supermask studies (--seeds) to set beside the tickets")
  args = parser.parse_args(argv)
  absl.logging.set_verbosity(absl.logging.ERROR)  # orbax warns about read-only managers
  if not Path(args.workdir).is_dir():
    print(f"error: {args.workdir} is not a directory; give a run or study workdir", file=sys.stderr)
    return 2
  try:
    summary = write_report(args.workdir, args.supermasks)
  except (FileNotFoundError, checkpoint.CheckpointError, RunError) as err:
    print(f"error: {err}", file=sys.stderr)
    return 2
  print(summary)
  return 0


def main_exit() -> None:
  """The console script's entry point."""
  sys.exit(main())


if __name__ == "__main__":
  main_exit()
