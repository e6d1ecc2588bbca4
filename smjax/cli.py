"""Command line of every experiment module: `--workdir`, `--regime`, `--set key=value`.

An experiment is a module with `get_config(**kwargs)`; its main is `cli.main(get_config, name)`.
Bad input ends with one `error: ...` line and exit code 2, before anything is written.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import shlex
import shutil
import signal
import sys
import threading
from pathlib import Path

from smjax import checkpoint, config as config_lib, data, distributed, report, run, runtime
from smjax import workdir as workdir_lib


COMMON_FIELDS = ("data_dir", "seed", "epochs", "batch_size", "lr", "finetune_epochs",
                 # the controls of --regime all (docs/results/decision_rule.md)
                 "finetune_controls", "equal_compute", "original_finetune", "original_control",
                 "dynamic_rescale")


def config_help(get_config, overrides: list[str] = ()) -> str:
  """The config fields a user of this experiment most likely changes, as the command will run
  them (after its `--set` overrides, when they are valid): the common ones and every one the
  experiment or an override sets away from `Config`'s default."""
  try:
    config = build_config(get_config, list(overrides)).to_dict()
  except ValueError:  # a bad override is reported when the command runs
    config = get_config().to_dict()
  base = config_lib.Config().to_dict()
  named = [o.partition("=")[0] for o in overrides]
  keys = list(COMMON_FIELDS) + [k for k in config if k not in COMMON_FIELDS
                                and (config[k] != base[k] or k in named)]
  switches = " or ".join(f"--set {p}=..." for p in inspect.signature(get_config).parameters)
  lines = [f"  {key} = {config[key]!r}" for key in keys]
  return "\n".join(
      ["config as this command runs it (change with --set KEY=VALUE; every field and its "
       "meaning: smjax/config.py):",
       *lines] + ([f"{switches} also switches the settings this experiment derives from it."]
                  if switches else []))


def _overrides_in(argv) -> list[str]:
  """The --set values of a command line, read before argparse (for --help's config)."""
  args = list(sys.argv[1:] if argv is None else argv)
  return [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--set"] + [
      a.removeprefix("--set=") for a in args if a.startswith("--set=")]


def parse_args(name: str, argv=None, doc: str | None = None, get_config=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog=f"python -m experiments.{name}", description=doc,
                                   epilog=config_help(get_config, _overrides_in(argv))
                                   if get_config else None,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", default=None,
                      help=f"run directory (default: runs/{name} for --regime all, "
                      f"runs/{name}_seeds for --seeds, runs/{name}_tickets for tickets, else "
                      f"runs/{name}/REGIME); rerun the same command to resume")
  parser.add_argument("--regime", default="all", choices=run.REGIME_CHOICES,
                      help="one run; every run of one initialization plus the report (all); "
                      "or lottery-ticket rounds and their controls (tickets, smjax/tickets.py)")
  parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override a config field (repeatable), e.g. --set lr=0.1")
  parser.add_argument("--seeds", type=int, nargs="+", metavar="SEED",
                      help="--regime all (or tickets) once per seed in WORKDIR/seed<N>/, then the aggregated "
                      "report in WORKDIR/report/ (mean ± std, paired t-intervals)")
  parser.add_argument("--jobs", type=int, default=1, metavar="N",
                      help="train up to N runs of --regime all / --seeds / tickets at once, each in "
                      "its own process on its own share of the CPU cores: faster for small models "
                      "on CPU (default 1)")
  parser.add_argument("--overwrite", action="store_true",
                      help="discard the checkpoints and metrics of a run with another config")
  cluster = parser.add_argument_group(
      "several processes (smjax/distributed.py)",
      "run the same command in every process; --distributed alone where jax finds the cluster "
      "itself (TPU pod slices, SLURM), else the three explicit settings")
  cluster.add_argument("--distributed", action="store_true", help="join a multi-process run")
  cluster.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address")
  cluster.add_argument("--num-processes", type=int, metavar="N")
  cluster.add_argument("--process-id", type=int, metavar="I")
  cluster.add_argument("--distributed-timeout", type=int, default=60, metavar="SECONDS",
                       help="give up joining after this long (default 60)")
  args = parser.parse_args(argv)
  if args.seeds and min(args.seeds) < 0:
    parser.error(f"--seeds takes seeds >= 0, got {min(args.seeds)}")
  if args.seeds and args.regime not in ("all", "tickets"):
    parser.error("--seeds runs every regime of each seed; leave out --regime")
  if args.jobs < 1 or (args.jobs > 1 and args.regime not in ("all", "tickets")):
    parser.error("--jobs takes N >= 1, and N > 1 only with --regime all or tickets")
  if args.jobs > 1 and (args.distributed or args.coordinator):
    parser.error("--jobs > 1 trains on one machine's cores; a multi-process run takes one job")
  return args


def build_config(get_config, overrides: list[str]) -> config_lib.Config:
  """`get_config(**kwargs)` called with the overrides it takes as arguments (e.g. `protocol`,
  which switches a whole set of fields), then every override applied on top."""
  params = inspect.signature(get_config).parameters
  base = config_lib.with_overrides(config_lib.Config(), overrides)  # validates keys and types
  kwargs = {key: getattr(base, key) for key in params
            if any(o.startswith(key + "=") for o in overrides)}
  return config_lib.with_overrides(get_config(**kwargs), overrides)


def _record_command(workdir: Path, name: str, argv) -> None:
  """WORKDIR/command.txt: every distinct command that ran a study (e.g. one that added seeds),
  one per line, for its report."""
  path = workdir / "command.txt"
  args = sys.argv[1:] if argv is None else argv
  line = " ".join(["python -m", f"experiments.{name}", *map(shlex.quote, args)])
  lines = path.read_text().splitlines() if path.exists() else []
  if distributed.is_writer() and line not in lines:
    workdir.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines + [line]) + "\n")


def main(get_config, name: str, argv=None, doc: str | None = None) -> int:
  """Runs the experiment `get_config` describes; returns the process exit code."""
  runtime.configure()
  args = parse_args(name, argv, doc, get_config)
  if args.distributed or args.coordinator:
    try:
      distributed.initialize(args.coordinator, args.num_processes, args.process_id,
                             args.distributed_timeout)
    except run.RunError as err:
      print(f"error: {err}", file=sys.stderr)
      return 2
  with _sigterm_interrupts():
    try:
      return _main(get_config, name, argv, args)
    except Exception as err:  # a collective that failed because another process is gone
      if distributed.lost_peer(err):
        distributed.lost_peer_exit(distributed.first_line(err))
      raise


def default_workdir(name: str, args: argparse.Namespace) -> Path:
  """Where a command writes: --workdir, else runs/NAME (--regime all), runs/NAME_seeds (a
  study), runs/NAME_tickets (tickets) or runs/NAME/REGIME (one run): no two write one report."""
  if args.workdir:
    return Path(args.workdir)
  if args.regime == "tickets":
    return Path(f"runs/{name}_tickets")
  if args.seeds:
    return Path(f"runs/{name}_seeds")
  if args.regime == "all":
    return Path(f"runs/{name}")
  return Path(f"runs/{name}/{args.regime}")


@contextlib.contextmanager
def _sigterm_interrupts():
  """SIGTERM outside the epoch loop (setup, report) interrupts as Ctrl-C does; the loop
  installs its own graceful stop for both."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  def interrupt(signum, frame):
    raise KeyboardInterrupt
  previous = signal.signal(signal.SIGTERM, interrupt)
  try:
    yield
  finally:
    signal.signal(signal.SIGTERM, previous)


def _main(get_config, name: str, argv, args) -> int:
  try:
    config = build_config(get_config, args.overrides)
    run.validate(config)  # before a study's command.txt is written
    workdir = default_workdir(name, args)
    with run.writer_lock(workdir):
      _dispatch(config, workdir, name, argv, args)
  except (ValueError, run.RunError, data.DataError, checkpoint.CheckpointError) as err:
    print(f"error: {err}", file=sys.stderr)
    return 2
  except run.Stopped as stopped:
    if distributed.is_writer():
      print(stopped, file=sys.stderr)
  except OSError as err:
    if not checkpoint.is_disk_full(err):
      raise
    where = Path(err.filename or args.workdir or ".")
    print(f"error: no space left on the device of {where} ({_free_mib(where)} MiB free"
          f"{_checkpoint_mib(where)}); free some space and rerun the same command: every "
          "finished epoch is kept", file=sys.stderr)
    return 2
  except KeyboardInterrupt:  # outside the epoch loop (which stops gracefully): setup or report
    print("\ninterrupted outside training; every finished epoch is kept and no report is "
          "half-written; rerun the same command to continue", file=sys.stderr)
    return 130
  return 0


def _free_mib(path: Path) -> int:
  return shutil.disk_usage(workdir_lib.nearest_existing(path)).free // 2**20


def _checkpoint_mib(path: Path) -> str:
  """', a checkpoint takes N MiB' for a checkpoints folder that holds one, else ''."""
  steps = sorted((p for p in path.glob("[0-9]*") if p.is_dir()), key=lambda p: int(p.name)) \
      if path.is_dir() else []
  if not steps:
    return ""
  size = sum(f.stat().st_size for f in steps[-1].rglob("*") if f.is_file())
  return f"; a checkpoint takes {max(1, size // 2**20)} MiB"


def _dispatch(config: config_lib.Config, workdir: Path, name: str, argv, args) -> None:
  """Trains what the command asks for in `workdir` (its lock held), then writes the report."""
  if args.regime in ("all", "tickets") or args.seeds:
    if args.regime == "tickets":
      _record_command(workdir, name, argv)
      run.train_tickets(config, workdir, args.seeds or [config.seed], overwrite=args.overwrite,
                        jobs=args.jobs)
    elif args.seeds:
      _record_command(workdir, name, argv)
      run.train_seeds(config, workdir, args.seeds, overwrite=args.overwrite, jobs=args.jobs)
    else:
      run.train_all(config, workdir, overwrite=args.overwrite, jobs=args.jobs)
    distributed.say(f"report: {_write_report(workdir)}")
    return
  single = run.regime_configs(config, workdir.parent)[args.regime]
  # What the user set explicitly is not replaced by what the regime derives: with
  # --regime finetune, --set lr / epochs / optimizer are the fine-tune's own, and
  # --set mask_run picks a mask run other than the sibling WORKDIR/../mask.
  explicit = [k for k in run.DERIVED_FIELDS if any(o.startswith(k + "=") for o in args.overrides)]
  single = single.replace(**{k: getattr(config, k) for k in explicit})
  run.train(single, workdir, overwrite=args.overwrite, name=args.regime)


def _write_report(workdir: Path) -> Path:
  """The report of what `workdir` holds, written by process 0 alone; its summary.md."""
  path = (report.write_report(workdir) if distributed.is_writer()
          else workdir / "report" / "summary.md")
  distributed.barrier("report written")
  return path
