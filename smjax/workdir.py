"""The run directory: config.json, metrics.jsonl and what may be reused.

metrics.jsonl gets one line per finished epoch, appended after that epoch's checkpoint is
on disk; on resume it is made to match the checkpoint (a line lost to a kill is restored from
the checkpoint, lines of epochs that no checkpoint holds are dropped).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any, Callable

from smjax.config import Config


class RunError(RuntimeError):
  """A run that must not start or go on (conflicting workdir, missing mask run, NaN loss...)."""


# The runs of one initialization, each WORKDIR/<regime>/, in the order they start and report.
REGIMES = ("mask", "weight", "finetune", "finetune_original", "finetune_random",
           "finetune_reinit", "weight_original")
LOCK_FILE = ".lock"
CONFIG_FILE = "config.json"  # what makes a folder a run directory
PROVENANCE_FILE = "provenance.json"  # smjax.provenance's
_held: dict[Path, int] = {}  # this process's locks: path -> open file descriptor


@contextlib.contextmanager
def locked(workdir: str | os.PathLike):
  """One writer per workdir: an exclusive lock on WORKDIR/.lock for the block, or a RunError
  naming the process that holds it. Re-entrant within a process; the operating system drops it
  when its holder dies, however it dies."""
  workdir = Path(workdir).absolute()
  if workdir in _held:
    yield
    return
  _refuse_a_file(workdir)
  created = [p for p in (workdir, *workdir.parents) if not p.exists()]
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    fd = os.open(workdir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
  except OSError as err:
    raise RunError(f"cannot create workdir {workdir}: {err.strerror}; use another --workdir") from None
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    holder = os.read(fd, 4096).decode(errors="replace").strip() or "another process"
    os.close(fd)
    raise RunError(f"{workdir} is in use by {holder}; wait for it to end (or stop it) and "
                   "rerun") from None
  os.ftruncate(fd, 0)
  os.write(fd, f"process {os.getpid()} ({shlex.join(sys.argv)[:300]})\n".encode())
  _held[workdir] = fd
  try:
    yield
  finally:
    del _held[workdir]
    if created and os.listdir(workdir) == [LOCK_FILE]:  # refused before writing: leave no trace
      (workdir / LOCK_FILE).unlink()
      for directory in created:
        with contextlib.suppress(OSError):
          directory.rmdir()
    os.close(fd)  # releases the lock


def write_json_atomic(path: Path, obj: Any) -> None:
  """Writes `path` whole or not at all (a full disk leaves the previous file and no temporary)."""
  _write_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _write_atomic(path: Path, text: str) -> None:
  tmp = path.with_suffix(path.suffix + ".tmp")
  try:
    tmp.write_text(text)
    os.replace(tmp, path)
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def remove_stale_temporaries(path: Path) -> None:
  """Removes `path`'s siblings left by an interrupted `replaced_atomically` of a process that
  is gone (NAME.tmp-PID, NAME.old-PID)."""
  for sibling in path.parent.glob(f"{path.name}.*-*") if path.parent.is_dir() else ():
    kind, _, pid = sibling.name[len(path.name) + 1:].partition("-")
    if kind in ("tmp", "old") and pid.isdigit() and not _pid_alive(int(pid)):
      shutil.rmtree(sibling, ignore_errors=True)


@contextlib.contextmanager
def replaced_atomically(path: Path):
  """Yields a fresh temporary directory that replaces `path` only once the block completes:
  an interrupt leaves the previous `path` (or none) and no half-written one."""
  remove_stale_temporaries(path)
  tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
  shutil.rmtree(tmp, ignore_errors=True)
  tmp.mkdir(parents=True)
  try:
    yield tmp
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  old = path.with_name(f"{path.name}.old-{os.getpid()}")
  if path.exists():
    os.replace(path, old)
  os.replace(tmp, path)
  shutil.rmtree(old, ignore_errors=True)


def check(config: Config, workdir: Path, overwrite: bool = False) -> None:
  """Everything about `workdir` that can refuse a run, read-only and before any heavy setup:
  a file in its place, a folder that cannot be created or written, a run of another config."""
  existing = _refuse_a_file(workdir)
  if not os.access(existing, os.W_OK | os.X_OK):
    what = "write to" if existing == workdir else f"create it: {existing} is not writable"
    raise RunError(f"cannot {what} workdir {workdir}; use another --workdir or fix its permissions")
  if is_run(workdir) and not overwrite:
    diff = config_diff(config, workdir)
    if diff:
      raise RunError(f"{workdir} holds a run with another config (differs in: {', '.join(diff)}); "
                     "use another --workdir or --overwrite")


def nearest_existing(path: Path) -> Path:
  """`path` if it exists, else its nearest existing parent."""
  return next(p for p in (path, *path.absolute().parents) if p.exists())


def _refuse_a_file(workdir: Path) -> Path:
  """RunError if `workdir` or a folder above it is a file; else its nearest existing folder."""
  if workdir.exists() and not workdir.is_dir():
    raise RunError(f"workdir {workdir} is a file, not a directory; use another --workdir")
  existing = nearest_existing(workdir)
  if not existing.is_dir():
    raise RunError(f"cannot create workdir {workdir}: {existing} is a file; use another --workdir")
  return existing


def claim(config: Config, workdir: Path, overwrite: bool = False) -> None:
  """Writes config.json (after `check`); with `overwrite`, drops the previous run's files. A run
  that trained nothing yet, or that this config extends, gets this config's config.json."""
  check(config, workdir, overwrite)
  path = workdir / CONFIG_FILE
  if (path.exists() and not overwrite and trained(workdir)
      and read_config(workdir).get("epochs") >= config.epochs):
    return
  if overwrite or not trained(workdir):  # a new run: no record of sessions that trained nothing
    shutil.rmtree(workdir / "checkpoints", ignore_errors=True)
    (workdir / "metrics.jsonl").unlink(missing_ok=True)
    (workdir / PROVENANCE_FILE).unlink(missing_ok=True)
  workdir.mkdir(parents=True, exist_ok=True)
  write_json_atomic(path, on_disk(config.to_dict(), workdir))


def is_run(path: str | os.PathLike) -> bool:
  """Whether `path` is a run directory (it holds a config.json)."""
  return (Path(path) / CONFIG_FILE).exists()


def trained(workdir: Path) -> bool:
  """Whether a run directory holds anything trained: a metrics line or a checkpoint."""
  checkpoints = workdir / "checkpoints"
  return bool(read_metrics(workdir)) or (checkpoints.is_dir() and any(
      p.name.isdigit() for p in checkpoints.iterdir()))


PATH_FIELDS = ("mask_run", "prune_from", "rewind_from")  # other run directories


def on_disk(values: dict, workdir: Path) -> dict:
  """A config as config.json holds it: the run directories it names (relative to the current
  directory) made relative to the run's own (`workdir`), so a study moved or reached through
  another path is still the same run."""
  out = dict(values, relative_paths=True)
  for key in PATH_FIELDS:
    if values.get(key):
      out[key] = os.path.relpath(os.path.abspath(values[key]), os.path.abspath(workdir))
  return out


def read_config(workdir: Path) -> dict:
  """A run's config.json; a damaged one is one error naming the file and the ways out."""
  path = workdir / CONFIG_FILE
  try:
    values = json.loads(path.read_text())
  except (ValueError, UnicodeDecodeError) as err:
    raise RunError(f"{path} is damaged ({err}); delete it to resume with this command's config, "
                   "or use --overwrite or another --workdir") from None
  if not isinstance(values, dict):
    raise RunError(f"{path} is damaged (not a JSON object); delete it to resume with this "
                   "command's config, or use --overwrite or another --workdir")
  return values


SAME_NETWORK = ("model", "dataset", "downsampling", "mask_biases", "mask_layers")


def check_same_network(source: Path, config: Config) -> None:
  """RunError unless the run in `source`, which `config`'s run starts from (a mask run, a
  ticket round), trains the same network on the same data with the same masked leaves."""
  stored = {**Config().to_dict(), **read_config(source)}
  for key in SAME_NETWORK:
    if stored[key] != getattr(config, key):
      raise RunError(f"{source} has {key}={stored[key]!r}, this run {getattr(config, key)!r}")


def config_diff(config: Config, workdir: Path) -> list[str]:
  """The fields in which `config` differs from the run in `workdir` (fields added since that
  run was written count as their defaults). More epochs under a constant schedule is no
  difference: the run continues bit-identically, as if it had been started with them."""
  stored = read_config(workdir)
  if not trained(workdir):
    return []  # nothing trained under the old config.json: this one replaces it
  if not stored.get("relative_paths"):  # written before paths were stored relative to the run
    stored = on_disk(stored, workdir)
  previous = {**Config().to_dict(), **stored}
  current = on_disk(config.identity(), workdir)
  diff = sorted(k for k in config.identity() if previous.get(k) != current[k])
  if diff == ["epochs"] and extends(config, previous):
    return []
  return diff


def extends(config: Config, previous: dict) -> bool:
  """Whether `config` is the run `previous` trained for more epochs: a constant schedule
  (a step's learning rate and data do not depend on the total) and no fewer epochs."""
  return (config.schedule == previous.get("schedule") == "constant"
          and config.epochs >= previous.get("epochs", config.epochs))


def finished(config: Config, workdir: Path) -> bool:
  """Whether `workdir` holds a run of `config` with every epoch done and its last checkpoint
  committed (a missing one means the run must resume from an earlier checkpoint)."""
  if not is_run(workdir) or config_diff(config, workdir):
    return False
  metrics = read_metrics(workdir)
  return (len(metrics) >= config.epochs and
          (workdir / "checkpoints" / str(metrics[-1]["step"])).is_dir())


def seed_dirs(workdir: str | os.PathLike, holds: Callable[[Path], bool]) -> dict[int, Path]:
  """{seed: WORKDIR/seed<seed>}, in seed order, for every seed folder for which `holds` is true
  (the one rule for the seed folders of studies and ticket rounds)."""
  found = {int(p.name[4:]): p for p in Path(workdir).glob("seed*")
           if p.name[4:].isdigit() and p.is_dir() and holds(p)}
  return dict(sorted(found.items()))


def planned_seeds(study: str | os.PathLike) -> list[int]:
  """The seeds a study's commands asked for (STUDY/seeds.json), [] if none recorded."""
  path = Path(study) / "seeds.json"
  return json.loads(path.read_text()) if path.exists() else []


def record_seeds(study: str | os.PathLike, seeds: list[int]) -> None:
  """Adds `seeds` to STUDY/seeds.json, so a report names the seeds that have no runs yet."""
  Path(study).mkdir(parents=True, exist_ok=True)
  write_json_atomic(Path(study) / "seeds.json", sorted(set(planned_seeds(study)) | set(seeds)))


def best_line(lines: list[dict], metric: str, order: str = "epoch") -> dict:
  """The line a run's best checkpoint holds: the highest `metric`, the latest (by `order`) on
  ties, as orbax keeps it. The one rule for the best epoch: training, reports and checkpoint
  reading all use it."""
  return max(lines, key=lambda m: (m[metric], m[order]))


def read_metrics(workdir: str | os.PathLike) -> list[dict]:
  """The metrics lines of a run; a last line torn by a kill is ignored."""
  path = Path(workdir) / "metrics.jsonl"
  if not path.exists():
    return []
  lines = []
  for text in path.read_text().splitlines():
    try:
      lines.append(json.loads(text))
    except json.JSONDecodeError:
      break
  return lines


def sync_metrics(workdir: Path, epoch: int, last_line: dict | None) -> None:
  """Makes metrics.jsonl hold exactly one line per checkpointed epoch 1..epoch."""
  current = read_metrics(workdir)
  lines = [m for m in current if m["epoch"] <= epoch]
  if last_line is not None and (not lines or lines[-1]["epoch"] < epoch):
    lines.append(last_line)  # killed between the checkpoint and its metrics line
  if len(lines) < len(current):
    print(f"warning: metrics.jsonl had epochs after the last good checkpoint (epoch {epoch}); "
          "they will be run again", file=sys.stderr)
  path = workdir / "metrics.jsonl"
  if lines != current or (path.exists() and not path.read_text().endswith("\n")
                          and path.stat().st_size):
    _write_atomic(path, "".join(json.dumps(m) + "\n" for m in lines))


def append_metrics(workdir: Path, line: dict) -> None:
  with open(workdir / "metrics.jsonl", "a") as f:
    f.write(json.dumps(line) + "\n")
    f.flush()
    os.fsync(f.fileno())


def append_wall_clock(study: Path, seconds: float, jobs: int, runs: int) -> None:
  """One line in STUDY/wall_clock.jsonl per command that trained some of the study's runs, so
  its report gives the real time it took (with --jobs, runs overlap in time)."""
  study.mkdir(parents=True, exist_ok=True)
  with open(study / "wall_clock.jsonl", "a") as f:
    f.write(json.dumps({"seconds": seconds, "jobs": jobs, "runs": runs}) + "\n")


def wall_clock(study: Path) -> dict | None:
  """{seconds, commands, jobs} summed over STUDY/wall_clock.jsonl; None if it has none."""
  path = Path(study) / "wall_clock.jsonl"
  lines = [json.loads(l) for l in path.read_text().splitlines() if l.strip()] if path.exists() else []
  if not lines:
    return None
  return {"seconds": sum(l["seconds"] for l in lines), "commands": len(lines),
          "jobs": sorted({l["jobs"] for l in lines})}


def wall_clock_text(summary: dict | None) -> str:
  """'Wall-clock of the training: 413 s (6.9 min), 1 command, --jobs 2. ' or ''."""
  if not summary:
    return ""
  jobs = "/".join(map(str, summary["jobs"]))
  plural = "s" if summary["commands"] > 1 else ""
  return (f"Wall-clock of the training: {summary['seconds']:.0f} s ({summary['seconds'] / 60:.1f} "
          f"min), {summary['commands']} command{plural}, --jobs {jobs}. ")
