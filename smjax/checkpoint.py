"""Orbax checkpoints of a run, indexed by training step.

Kept: the two latest (resume, with one to fall back on) and the best by the protocol's metric.
Every checkpoint holds three items:
  state  the TrainState pytree (step, trainable, batch_stats, opt_state, masks)
  masks  the binary evaluation masks, bool, mirroring the scores
  meta   JSON: epoch, the epoch's metrics line (or, for a checkpoint written by a graceful
         stop mid-epoch, `partial: true` and the epoch's per-step metrics so far), config, layers
`restore` reads them back as numpy pytrees and dicts without any model code.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from smjax import workdir as workdir_lib
from smjax.config import best_metric

ITEMS = ("state", "masks", "meta")
# What orbax logs at WARNING about settings this module chose on purpose (read-only managers
# for reading, unranked mid-epoch checkpoints); nothing a user can act on. Others still show.
EXPECTED_WARNINGS = ("CheckpointManagerOptions.read_only=True, setting save_interval_steps=0",
                     "Given directory is read only=",
                     "Requested `tracked_metric`; did not provide metrics.")  # mid-epoch stops


class _DropExpectedWarnings(logging.Filter):
  def filter(self, record: logging.LogRecord) -> bool:
    return not any(text in record.getMessage() for text in EXPECTED_WARNINGS)


logging.getLogger("absl").addFilter(_DropExpectedWarnings())


class CheckpointError(RuntimeError):
  """A missing, foreign or unreadable checkpoint."""


def checkpoint_dir(workdir: str | os.PathLike) -> Path:
  return Path(workdir) / "checkpoints"


@dataclasses.dataclass(frozen=True)
class _SkippingNameFormat:
  """Orbax's step naming with some steps left out: a read-only manager must not open the
  checkpoints whose saved metrics are damaged (orbax parses them all on opening)."""
  base: Any
  skip: frozenset

  def find_all(self, base_path):
    return (m for m in self.base.find_all(base_path) if m.step not in self.skip)

  def __getattr__(self, name):
    return getattr(self.base, name)


def make_manager(directory: str | os.PathLike, best_metric: str = "val_accuracy",
                 read_only: bool = False, keep_every_steps: int = 0) -> ocp.CheckpointManager:
  """Keeps the 2 latest checkpoints, the best one by `best_metric` (higher is better) and,
  with `keep_every_steps`, every checkpoint at a multiple of it (for mask dynamics).

  Saves are synchronous and atomic: orbax writes a temporary directory and renames it.
  """
  metric = lambda metrics: metrics[best_metric]
  if read_only:  # ranking is best_step's, which reads what is readable
    skip = frozenset(damaged_metrics(directory))
    # Reading is this process's alone: no barrier with the others (a report is written by
    # process 0 while the others wait for it).
    alone = ocp.options.MultiprocessingOptions(
        primary_host=jax.process_index(), active_processes={jax.process_index()},
        barrier_sync_key_prefix=f"read{jax.process_index()}")
    options = ocp.CheckpointManagerOptions(
        enable_async_checkpointing=False, read_only=True, create=False,
        step_name_format=_SkippingNameFormat(ocp.step.standard_name_format(), skip),
        multiprocessing_options=alone)
    return ocp.CheckpointManager(Path(directory).absolute(), options=options, item_names=ITEMS)
  policies = [ocp.checkpoint_managers.LatestN(n=2),
              ocp.checkpoint_managers.BestN(get_metric_fn=metric, reverse=False, n=1)]
  if keep_every_steps:
    policies.append(ocp.checkpoint_managers.EveryNSteps(interval_steps=keep_every_steps))
  policy = ocp.checkpoint_managers.AnyPreservationPolicy(policies)
  # best_fn only makes the manager persist metrics and answer best_step();
  # which checkpoints survive is decided by the preservation policy.
  options = ocp.CheckpointManagerOptions(
      preservation_policy=policy, best_fn=metric, best_mode="max", enable_async_checkpointing=False)
  return ocp.CheckpointManager(Path(directory).absolute(), options=options, item_names=ITEMS)


def save(manager: ocp.CheckpointManager, step: int, state: Any, masks: Any, meta: dict) -> None:
  """Saves one checkpoint; `meta['metrics']` (absent mid-epoch) ranks it."""
  state = jax.device_get(state)  # host arrays: on several processes orbax writes process 0's
  try:
    manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), masks=ocp.args.StandardSave(masks),
        meta=ocp.args.JsonSave(meta)), metrics=meta.get("metrics"))
    manager.wait_until_finished()
  except Exception as err:  # orbax and tensorstore wrap a full disk in many types
    if not is_disk_full(err):
      raise
    remove_temporaries(manager.directory)
    raise OSError(errno.ENOSPC, "No space left on device", str(manager.directory)) from None


def is_disk_full(err: BaseException) -> bool:
  """Whether an error (or one it wraps) is a full disk or an exhausted quota."""
  while err is not None:
    if getattr(err, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or \
        "No space left on device" in str(err):
      return True
    err = err.__cause__ or err.__context__
  return False


def remove_temporaries(directory: str | os.PathLike) -> None:
  """Removes the temporary folders of saves that did not complete (orbax's *.orbax-checkpoint-tmp*);
  called only by the run that holds the workdir."""
  for tmp in Path(directory).glob("*.orbax-checkpoint-tmp*") if Path(directory).is_dir() else ():
    shutil.rmtree(tmp, ignore_errors=True)


def restore_state(manager: ocp.CheckpointManager, step: int, target: Any) -> tuple[Any, dict]:
  """(state restored into the structure of `target`, meta) of one checkpoint."""
  try:
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(jax.device_get(target)), meta=ocp.args.JsonRestore()))
  except Exception as err:  # orbax and tensorstore raise many types for damaged files
    raise CheckpointError(_unreadable(manager.directory / str(step), err)) from err
  return restored["state"], dict(restored["meta"])


def quarantine(directory: str | os.PathLike, step: int) -> Path:
  """Moves a damaged checkpoint out of `directory` into a sibling `checkpoints_damaged/`
  (kept for a post-mortem); a manager open on `directory` needs `reload()` after it."""
  source = Path(directory) / str(step)
  target = Path(directory).parent / "checkpoints_damaged" / str(step)
  target.parent.mkdir(exist_ok=True)
  shutil.rmtree(target, ignore_errors=True)
  shutil.move(str(source), str(target))
  return target


def _saved_metrics(directory: Path) -> dict[int, dict | None]:
  """Per step directory, the metrics orbax saved beside it ({} for none, None if damaged).
  Orbax's manager parses these on opening, so one damaged file would stop it opening at all."""
  found = {}
  for step_dir in directory.iterdir() if directory.is_dir() else ():
    if step_dir.name.isdigit():
      path = step_dir / "metrics" / "metrics"
      try:
        metrics = json.loads(path.read_text()) if path.exists() else {}
      except (ValueError, UnicodeDecodeError):
        metrics = None
      found[int(step_dir.name)] = metrics if isinstance(metrics, dict) else None
  return found


def damaged_metrics(directory: str | os.PathLike) -> list[int]:
  """The steps in `directory` whose saved metrics file is unreadable."""
  return sorted(s for s, m in _saved_metrics(Path(directory)).items() if m is None)


def _best_metric(directory: str | os.PathLike) -> str:
  """The metric the run that owns `directory` ranks its checkpoints by."""
  try:
    return best_metric(workdir_lib.read_config(Path(directory).parent)["protocol"])
  except (OSError, workdir_lib.RunError, KeyError, TypeError):
    return best_metric("")


def best_step(directory: str | os.PathLike, best_metric: str = "val_accuracy") -> int | None:
  """The step with the highest saved `best_metric` (the latest wins ties, as in orbax);
  checkpoints whose metrics are missing or damaged do not compete."""
  ranked = [{**m, "step": s} for s, m in _saved_metrics(Path(directory)).items()
            if m and best_metric in m]
  return workdir_lib.best_line(ranked, best_metric, order="step")["step"] if ranked else None


def _unreadable(path: Path, err: Exception) -> str:
  detail = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
  return f"checkpoint {path} is unreadable ({type(err).__name__}: {detail})"


def _open(path: str | os.PathLike) -> tuple[ocp.CheckpointManager, int | None]:
  """A read-only manager for a run dir, its checkpoints/ dir or one step dir (and that step)."""
  path = Path(path)
  step = None
  if path.name.isdigit() and not (path / "checkpoints").is_dir():
    step, path = int(path.name), path.parent
  if (path / "checkpoints").is_dir():
    path = path / "checkpoints"
  if not path.is_dir() or not any(p.name.isdigit() for p in path.iterdir()):
    raise CheckpointError(f"no checkpoints in {path}: not a run directory")
  return make_manager(path, read_only=True), step


def steps(path: str | os.PathLike) -> list[int]:
  """The steps of the checkpoints a run directory holds."""
  return sorted(_open(path)[0].all_steps())


def restore(path: str | os.PathLike, step: int | None = None, which: str = "best") -> dict:
  """Restores a checkpoint as numpy pytrees and dicts, no model code needed.

  path: a run directory, its `checkpoints/` directory, or one step directory
  (`checkpoints/<step>`). Without `step`, the best (`which="best"`) or the latest
  checkpoint. Returns {'step', 'state', 'masks', 'meta'}.
  """
  manager, path_step = _open(path)
  step = step if step is not None else path_step
  saved = manager.all_steps()
  if step is None:
    step = best_step(manager.directory, _best_metric(manager.directory)) if which == "best" \
        else manager.latest_step()
  if step in damaged_metrics(manager.directory):
    raise CheckpointError(_unreadable(Path(manager.directory) / str(step),
                                      ValueError("its saved metrics are damaged")))
  if step not in saved:
    raise CheckpointError(f"no checkpoint for step {step} in {manager.directory}; "
                          f"saved steps: {sorted(saved)}")
  try:
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(), masks=ocp.args.StandardRestore(),
        meta=ocp.args.JsonRestore()))
  except Exception as err:
    raise CheckpointError(_unreadable(Path(manager.directory) / str(step), err)) from err
  to_numpy = lambda tree: jax.tree.map(np.asarray, tree)
  return {"step": step, "state": to_numpy(restored["state"]), "masks": to_numpy(restored["masks"]),
          "meta": dict(restored["meta"])}


def read_meta(path: str | os.PathLike, step: int) -> dict:
  """The JSON meta item of one checkpoint, without reading its arrays."""
  manager, _ = _open(path)
  try:
    return dict(manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])
  except Exception as err:
    raise CheckpointError(_unreadable(Path(manager.directory) / str(step), err)) from err
