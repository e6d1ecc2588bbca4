"""Command line of every experiment module: `--workdir`, `--regime`, `--set key=value`.

An experiment is a module with `get_config(**kwargs)`; its main is `cli.main(get_config, name)`.
Bad input ends with one `error: ...` line and exit code 2, before anything is written.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

from smjax import checkpoint, config as config_lib, data, run, runtime


def parse_args(name: str, argv=None, doc: str | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog=f"python -m experiments.{name}", description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", default=None,
                      help=f"run directory (default: runs/{name} for --regime all, else "
                      f"runs/{name}/REGIME); rerun the same command to resume")
  parser.add_argument("--regime", default="all", choices=run.REGIMES,
                      help="one mode, or all three from one initialization plus the report")
  parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override a config field (repeatable), e.g. --set lr=0.1")
  parser.add_argument("--overwrite", action="store_true",
                      help="discard the checkpoints and metrics of a run with another config")
  return parser.parse_args(argv)


def build_config(get_config, overrides: list[str]) -> config_lib.Config:
  """`get_config(**kwargs)` called with the overrides it takes as arguments (e.g. `protocol`,
  which switches a whole set of fields), then every override applied on top."""
  params = inspect.signature(get_config).parameters
  base = config_lib.with_overrides(config_lib.Config(), overrides)  # validates keys and types
  kwargs = {key: getattr(base, key) for key in params
            if any(o.startswith(key + "=") for o in overrides)}
  return config_lib.with_overrides(get_config(**kwargs), overrides)


def main(get_config, name: str, argv=None, doc: str | None = None) -> int:
  """Runs the experiment `get_config` describes; returns the process exit code."""
  runtime.configure()
  args = parse_args(name, argv, doc)
  try:
    config = build_config(get_config, args.overrides)
    if args.regime == "all":
      workdir = Path(args.workdir or f"runs/{name}")
      run.train_all(config, workdir, overwrite=args.overwrite)
      print(f"report: {workdir / 'report' / 'summary.md'}")
    else:
      workdir = Path(args.workdir or f"runs/{name}/{args.regime}")
      single = run.regime_configs(config, workdir.parent)[args.regime]
      if config.mask_run:  # finetune from a mask run other than the sibling WORKDIR/../mask
        single = single.replace(mask_run=config.mask_run)
      run.train(single, workdir, overwrite=args.overwrite)
  except (ValueError, run.RunError, data.DataError, checkpoint.CheckpointError) as err:
    print(f"error: {err}", file=sys.stderr)
    return 2
  except run.Stopped as stopped:
    print(stopped, file=sys.stderr)
  except KeyboardInterrupt:  # before the first step: nothing to checkpoint yet
    print("\ninterrupted before training started", file=sys.stderr)
    return 130
  return 0
