"""Orbax checkpoints of a run: the latest (for resume) and the best by the protocol's metric.

Each checkpoint (one per finished epoch, step = epoch) holds three items:
  state  the TrainState pytree (step, trainable, batch_stats, opt_state, masks)
  masks  the binary evaluation masks, bool, mirroring the scores
  meta   JSON: the epoch's metrics line and the run's config
`restore` reads them back as plain numpy/dicts without any model code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import orbax.checkpoint as ocp

ITEMS = ("state", "masks", "meta")


class CheckpointError(RuntimeError):
  """A missing, foreign or unreadable checkpoint."""


def make_manager(directory: str | os.PathLike, best_metric: str = "val_accuracy",
                 read_only: bool = False) -> ocp.CheckpointManager:
  """Keeps the latest checkpoint and the best one by `best_metric` (higher is better).

  Saves are synchronous and atomic (orbax writes to a temporary directory and renames).
  """
  metric = lambda metrics: metrics[best_metric]
  policy = ocp.checkpoint_managers.AnyPreservationPolicy([
      ocp.checkpoint_managers.LatestN(n=1),
      ocp.checkpoint_managers.BestN(get_metric_fn=metric, reverse=False, n=1),
  ])
  # best_fn only makes the manager persist metrics and answer best_step();
  # which checkpoints survive is decided by the preservation policy.
  options = ocp.CheckpointManagerOptions(
      preservation_policy=None if read_only else policy, best_fn=metric, best_mode="max",
      enable_async_checkpointing=False, read_only=read_only, create=not read_only)
  return ocp.CheckpointManager(Path(directory).absolute(), options=options, item_names=ITEMS)


def save(manager: ocp.CheckpointManager, epoch: int, state: Any, masks: Any, meta: dict) -> None:
  """Saves one epoch; `meta['metrics']` ranks it."""
  manager.save(epoch, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), masks=ocp.args.StandardSave(masks),
      meta=ocp.args.JsonSave(meta)), metrics=meta["metrics"])
  manager.wait_until_finished()


def restore_state(manager: ocp.CheckpointManager, epoch: int, target: Any) -> tuple[Any, dict]:
  """(state restored into the structure of `target`, meta) of one epoch."""
  restored = manager.restore(epoch, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
  return restored["state"], restored["meta"]


def checkpoint_dir(workdir: str | os.PathLike) -> Path:
  return Path(workdir) / "checkpoints"


def restore(path: str | os.PathLike, epoch: int | None = None, which: str = "best") -> dict:
  """Restores a checkpoint as numpy pytrees and dicts, no model code needed.

  path: a run directory, its `checkpoints/` directory, or one step directory
  (`checkpoints/<epoch>`). Returns {'epoch', 'state', 'masks', 'meta'}.
  """
  path = Path(path)
  if path.name.isdigit() and epoch is None:
    epoch, path = int(path.name), path.parent
  if (path / "checkpoints").is_dir():
    path = path / "checkpoints"
  if not path.is_dir():
    raise CheckpointError(f"no checkpoints in {path}")
  manager = make_manager(path, read_only=True)
  steps = manager.all_steps()
  if not steps:
    raise CheckpointError(f"no checkpoints in {path}")
  if epoch is None:
    epoch = manager.best_step() if which == "best" else manager.latest_step()
  if epoch not in steps:
    raise CheckpointError(f"no checkpoint for epoch {epoch} in {path}; saved: {sorted(steps)}")
  try:
    restored = manager.restore(epoch, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(), masks=ocp.args.StandardRestore(),
        meta=ocp.args.JsonRestore()))
  except Exception as err:  # orbax raises many types for damaged files
    raise CheckpointError(f"checkpoint {path / str(epoch)} is unreadable: "
                          f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
  to_numpy = lambda tree: __import__("jax").tree.map(np.asarray, tree)
  return {"epoch": epoch, "state": to_numpy(restored["state"]),
          "masks": to_numpy(restored["masks"]), "meta": dict(restored["meta"])}
