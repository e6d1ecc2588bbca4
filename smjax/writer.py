"""What a run writes besides its checkpoints: metrics.jsonl, progress lines, warnings, TensorBoard.

One `RunWriter` per run. Every process keeps the run's epoch lines in memory (they compute the
same ones), so all agree on the best epoch so far without reading a file; only process 0
writes. On resume it starts from the lines metrics.jsonl holds once it matches the checkpoint.

TensorBoard event files (tensorboardX, no TensorFlow) go in the run directory, so
`tensorboard --logdir runs/` shows every run, seed and regime: each metrics.jsonl field under
its own name at the epoch's last step, and `train_loss_step` every `tensorboard_every_steps`
steps.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from smjax import distributed, workdir as workdir_lib

NOT_SCALARS = ("epoch", "step", "mode")  # metrics.jsonl fields that are not curves


class RunWriter:
  """Owns a run's metrics lines, progress lines, warnings and TensorBoard events."""

  def __init__(self, workdir: Path, *, tag: str, metric: str, num_classes: int,
               tensorboard: bool = True, every_steps: int = 50, diverging_factor: float = 10.0):
    self.workdir, self.tag, self.metric = Path(workdir), tag, metric
    self.num_classes, self.every_steps, self.diverging_factor = num_classes, every_steps, diverging_factor
    self.is_writer = distributed.is_writer()
    self.lines = workdir_lib.read_metrics(self.workdir)
    self._events = None
    if tensorboard and self.is_writer:
      from tensorboardX import SummaryWriter
      resumed_at = self.lines[-1]["step"] + 1 if self.lines else 0
      # purge_step: TensorBoard drops what an earlier session logged from this step on
      # event files are named by the second they start in: a session resumed within the same
      # second would overwrite the previous one's without a suffix of its own (in order)
      self._events = SummaryWriter(str(self.workdir), purge_step=resumed_at or None,
                                   filename_suffix=f".{time.time_ns()}")

  def is_new_best(self, line: dict) -> bool:
    """Whether `line` becomes the best checkpoint (`workdir.best_line`'s rule)."""
    return workdir_lib.best_line(self.lines + [line], self.metric) is line

  def steps(self, first_step: int, history: list) -> None:
    """The training loss of every `every_steps`-th step of `history` ([loss, accuracy] per
    step, the first being step `first_step` + 1)."""
    if self._events is not None:
      for i, (loss, _) in enumerate(history):
        step = first_step + i + 1
        if step % self.every_steps == 0:
          self._events.add_scalar("train_loss_step", loss, step)

  def epoch(self, line: dict) -> None:
    """Keeps an epoch's line; process 0 warns if it diverges, appends it to metrics.jsonl
    (after its checkpoint is on disk), prints the progress line and logs its scalars."""
    if self.is_writer:
      self._warn_if_diverging(line)
    self.lines.append(line)
    if not self.is_writer:
      return
    workdir_lib.append_metrics(self.workdir, line)
    print(format_line(line, self.tag), flush=True)
    if self._events is not None:
      for key, value in line.items():
        if key not in NOT_SCALARS and isinstance(value, (int, float)):
          self._events.add_scalar(key, value, line["step"])
      self._events.flush()

  def _warn_if_diverging(self, line: dict) -> None:
    """A warning when an epoch's mean training loss is over `diverging_factor` times the first
    epoch's, or the chance-level loss ln(classes): finite, but the run is likely diverging."""
    factor = self.diverging_factor
    bound = factor * min([np.log(self.num_classes)] + [m["train_loss"] for m in self.lines[:1]])
    if line["train_loss"] > bound:
      print(f"warning: epoch {line['epoch']}'s mean training loss {line['train_loss']:.3g} is "
            f"over {factor:g}x the first epoch's or chance level's ({bound / factor:.3g}); the "
            "run is likely diverging (a lower lr?)", file=sys.stderr, flush=True)

  def close(self) -> None:
    if self._events is not None:
      self._events.close()
      self._events = None


def format_line(line: dict, tag: str) -> str:
  """The progress line of an epoch."""
  pct = lambda v: "-" if v is None else f"{100 * v:.2f}%"
  return (f"[{tag}] epoch {line['epoch']}: train loss {line['train_loss']:.4f} "
          f"acc {pct(line['train_accuracy'])} | val {pct(line['val_accuracy'])} | "
          f"test {pct(line['test_accuracy'])} | masked {pct(line['masked_fraction'])} | "
          f"{line['seconds']:.1f}s, {line['images_per_second']:.0f} img/s")
