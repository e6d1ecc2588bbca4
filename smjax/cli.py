"""Command line of every experiment module: `--workdir`, `--regime`, `--set key=value`.

An experiment is a module with `get_config()`; its main is `cli.main(get_config(), name)`.
Bad input ends with one `error: ...` line and exit code 2, before anything is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from smjax import checkpoint, config as config_lib, data, run


def parse_args(name: str, argv=None, doc: str | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog=f"python -m experiments.{name}", description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", default=f"runs/{name}",
                      help="run directory (default: runs/%(default)s); rerun to resume")
  parser.add_argument("--regime", default="all", choices=run.REGIMES,
                      help="one mode, or all three from one initialization plus the report")
  parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override a config field (repeatable), e.g. --set lr=0.1")
  parser.add_argument("--overwrite", action="store_true",
                      help="discard the checkpoints and metrics of a run with another config")
  return parser.parse_args(argv)


def main(base: config_lib.Config, name: str, argv=None, doc: str | None = None) -> int:
  args = parse_args(name, argv, doc)
  try:
    config = config_lib.with_overrides(base, args.overrides)
    workdir = Path(args.workdir)
    if args.regime == "all":
      run.train_all(config, workdir, overwrite=args.overwrite)
      print(f"report: {workdir / 'report' / 'summary.md'}")
    else:
      if args.regime == "finetune" and not config.mask_run:
        config = config.replace(mask_run=str(workdir.parent / "mask"))
      config = run.regime_configs(config, workdir.parent)[args.regime] if args.regime != "finetune" \
          else config.replace(mode="finetune", lr=config.finetune_lr, epochs=config.finetune_epochs)
      run.train(config, workdir, overwrite=args.overwrite)
  except (ValueError, run.RunError, data.DataError, checkpoint.CheckpointError) as err:
    print(f"error: {err}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print(f"\ninterrupted; rerun the same command to resume from the last finished epoch",
          file=sys.stderr)
    return 130
  return 0
