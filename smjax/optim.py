"""Modes as optimizer partitions of one trainable pytree `{'params', 'scores'}`.

Every leaf gets one of three labels:

  'scores'  trained by the score optimizer (Adam by default),
  'weights' trained by the weight optimizer (SGD + momentum by default),
  'freeze'  `optax.set_to_zero()`: the update is +0.0, the leaf stays bit-identical.

| mode     | scores  | kernels/biases | BN affine                         |
|----------|---------|----------------|-----------------------------------|
| mask     | scores  | freeze         | freeze (weights if train_bn_with_mask) |
| weight   | freeze  | weights        | weights                           |
| finetune | freeze  | weights        | weights                           |

Weight decay, momentum and lr schedules live inside the trained branches only.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import numpy as np
import optax
from flax import traverse_util

PyTree = Any
LABELS = ("scores", "weights", "freeze")


def is_norm_param(path: tuple[str, ...], flat_params: dict) -> bool:
  """A normalisation affine param: a leaf whose layer has no kernel (BN scale/bias)."""
  return path[:-1] + ("kernel",) not in flat_params


def partition_labels(mode: str, *, train_bn_with_mask: bool = False) -> Callable[[PyTree], PyTree]:
  """Returns `labels_fn(trainable) -> pytree of labels` for a mode."""
  if mode not in ("mask", "weight", "finetune"):
    raise ValueError(f"unknown mode {mode!r}; known: mask, weight, finetune")

  def labels_fn(trainable: PyTree) -> PyTree:
    flat = traverse_util.flatten_dict(trainable["params"])

    def param_label(path):
      if mode != "mask":
        return "weights"
      return "weights" if train_bn_with_mask and is_norm_param(path, flat) else "freeze"

    params = traverse_util.unflatten_dict({p: param_label(p) for p in flat})
    score_label = "scores" if mode == "mask" else "freeze"
    scores = jax.tree.map(lambda _: score_label, trainable["scores"])
    return {"params": params, "scores": scores}

  return labels_fn


def make_schedule(lr: float, schedule: str, total_steps: int) -> optax.Schedule:
  if schedule == "cosine":
    return optax.cosine_decay_schedule(lr, max(total_steps, 1))
  return optax.constant_schedule(lr)


def _base(name: str, learning_rate: optax.ScalarOrSchedule, momentum: float) -> optax.GradientTransformation:
  if name == "adam":
    return optax.adam(learning_rate)
  if name == "sgd":
    return optax.sgd(learning_rate, momentum=momentum or None)
  raise ValueError(f"unknown optimizer {name!r}; known: sgd, adam")


class Optimizer(NamedTuple):
  """A mode's optimizer and the learning rate it applies."""
  tx: optax.GradientTransformationExtraArgs
  learning_rate: Callable[[PyTree, int], float]  # (opt_state, step) -> the trained branch's rate


def make_optimizer(mode: str, **settings) -> optax.GradientTransformationExtraArgs:
  """One `optax.multi_transform` partition implementing `mode` (see `make`)."""
  return make(mode, **settings).tx


def make(mode: str, *, lr: float, score_lr: float | None = None, optimizer: str = "sgd",
         score_optimizer: str = "adam", momentum: float = 0.9, weight_decay: float = 0.0,
         schedule: str = "constant", total_steps: int = 1, steps_per_epoch: int = 1,
         plateau_patience: int = 2, plateau_factor: float = 0.1,
         train_bn_with_mask: bool = False) -> Optimizer:
  """One `optax.multi_transform` partition implementing `mode`, and the learning rate of the
  branch the mode trains (the scores' in mask mode, the weights' otherwise).

  `schedule="plateau"` multiplies the trained branches' updates by
  `optax.contrib.reduce_on_plateau`, fed `value = 1 - batch accuracy` each step
  and averaged over an epoch (`accumulation_size=steps_per_epoch`), i.e.
  Keras' ReduceLROnPlateau on training accuracy with `patience` in epochs.
  `lr` is the weights' learning rate, `score_lr` (default: `lr`) the scores'.
  """
  score_lr = lr if score_lr is None else score_lr
  schedules = {"scores": make_schedule(score_lr, schedule, total_steps),
               "weights": make_schedule(lr, schedule, total_steps)}

  def trained(name, rate, decay):
    parts = [optax.add_decayed_weights(weight_decay)] if decay and weight_decay else []
    parts.append(_base(name, rate, momentum))
    if schedule == "plateau":
      parts.append(optax.contrib.reduce_on_plateau(
          factor=plateau_factor, patience=plateau_patience, rtol=0.0, atol=1e-4,
          accumulation_size=steps_per_epoch))
    return optax.chain(*parts)

  transforms = {"scores": trained(score_optimizer, schedules["scores"], decay=False),
                "weights": trained(optimizer, schedules["weights"], decay=True),
                "freeze": optax.set_to_zero()}
  tx = optax.multi_transform(transforms,
                             partition_labels(mode, train_bn_with_mask=train_bn_with_mask))
  rate = schedules["scores" if mode == "mask" else "weights"]

  def learning_rate(opt_state: PyTree, step: int) -> float:
    """The rate applied at `step`: the schedule times any plateau scale."""
    return float(rate(step)) * plateau_scale(opt_state)

  return Optimizer(tx, learning_rate)


def plateau_scale(opt_state: PyTree) -> float:
  """The smallest `reduce_on_plateau` scale in an optimizer state (1.0 without one)."""
  plateau = optax.contrib.ReduceLROnPlateauState
  states = jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, plateau))
  scales = [x.scale for x in states if isinstance(x, plateau)
            and isinstance(x.scale, (jax.Array, np.ndarray))]  # empty branches hold MaskedNode
  return float(np.min(scales)) if scales else 1.0
