"""Train state and pure train/eval steps; every pmap of the project lives here.

A step is `(state, batch, key) -> (state, metrics)`: no Python side effects,
jit- and pmap-able. The mode enters in exactly two places: the optimizer's
partition labels (smjax.optim) and `forward_masks` below.
"""

from __future__ import annotations

from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from smjax import augment, data, masking, models, optim
from smjax.config import Config

PyTree = Any
AXIS = "batch"


@flax.struct.dataclass
class TrainState:
  """Everything a step reads and writes.

  trainable: {'params': flax params, 'scores': nested dict mirroring maskable params}
  masks:     finetune: the frozen binary masks (mirroring scores); otherwise {}.
  """
  step: jax.Array
  trainable: PyTree
  batch_stats: PyTree
  opt_state: optax.OptState
  masks: PyTree
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
  learning_rate: Callable[[optax.OptState, int], float] = flax.struct.field(pytree_node=False)


def make_optimizer(config: Config, steps_per_epoch: int = 1) -> optim.Optimizer:
  """The partition of `config.mode` and its learning rate, from the config's optimizer fields."""
  return optim.make(
      config.mode, lr=config.lr, score_lr=config.score_lr, optimizer=config.optimizer,
      score_optimizer=config.score_optimizer, momentum=config.momentum,
      weight_decay=config.weight_decay, schedule=config.schedule,
      total_steps=steps_per_epoch * config.epochs, steps_per_epoch=steps_per_epoch,
      plateau_patience=config.plateau_patience, plateau_factor=config.plateau_factor,
      train_bn_with_mask=config.train_bn_with_mask)


def init_variables(key: jax.Array, model: nn.Module, input_shape: tuple[int, ...],
                   config: Config) -> tuple[PyTree, PyTree, PyTree]:
  """(params, scores, batch_stats) of a fresh model; scores from `fold_in(key, 1)`."""
  variables = model.init(key, jnp.zeros((1, *input_shape), jnp.float32), train=False)
  params = variables["params"]
  predicate = (masking.is_kernel if config.mask_layers == "all" else masking.mask_predicate(
      config.mask_layers, models.layer_order(model, input_shape)))
  paths = masking.maskable_paths(params, include_bias=config.mask_biases, predicate=predicate)
  if config.weight_init == "signed_constant":
    params = masking.signed_constant(params, paths)
  scores = masking.init_scores(params, jax.random.fold_in(key, 1), init=config.score_init,
                               value=config.score_init_value, include_bias=config.mask_biases,
                               predicate=predicate)
  return params, scores, variables.get("batch_stats", {})


def create_state(key: jax.Array, model: nn.Module, input_shape: tuple[int, ...], config: Config, *,
                 steps_per_epoch: int = 1, masks: PyTree | None = None) -> TrainState:
  """A fresh state. The same key gives bit-identical params in every mode.

  input_shape: [height, width, channels]. Finetune needs `masks`, the frozen
  binary masks (e.g. a mask run's evaluation masks).
  """
  if config.mode == "finetune" and masks is None:
    raise ValueError("finetune mode needs the frozen binary masks to train under")
  params, scores, batch_stats = init_variables(key, model, input_shape, config)
  tx, learning_rate = make_optimizer(config, steps_per_epoch)
  trainable = {"params": params, "scores": scores}
  masks = {} if config.mode != "finetune" else jax.tree.map(jnp.asarray, masks)
  return TrainState(step=jnp.zeros((), jnp.int32), trainable=trainable, batch_stats=batch_stats,
                    opt_state=tx.init(trainable), masks=masks, tx=tx, learning_rate=learning_rate)


def forward_masks(config: Config) -> Callable[[TrainState, jax.Array | None, bool], PyTree | None]:
  """`(state, key, train) -> masks` used in the forward pass of `config.mode`.

  mask: the estimator of the scores; weight: none; finetune: the frozen masks.
  """
  estimator = masking.make_mask_fn(config.estimator, threshold=config.threshold,
                                   fraction=config.topk_fraction)
  return {
      "mask": lambda state, key, train: estimator(state.trainable["scores"], key, train),
      "weight": lambda state, key, train: None,
      "finetune": lambda state, key, train: state.masks,
  }[config.mode]


def evaluation_masks(state: TrainState, config: Config) -> PyTree:
  """The deterministic binary masks a state is evaluated with (all ones in weight mode)."""
  masks = forward_masks(config)(state, None, False)
  if masks is None:
    masks = jax.tree.map(jnp.ones_like, state.trainable["scores"])
  return masks


def _preprocess(images: jax.Array, dataset: str) -> jax.Array:
  """uint8 or float [batch, h, w, c] -> the network's float32 input, as the dataset's
  registration says: (images / scale - mean) / std."""
  scale, mean, std = data.input_scaling(dataset)
  mean, std = jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32)
  return (images.astype(jnp.float32) / scale - mean) / std


def _apply(model, state, params, images, train, rngs=None):
  variables = {"params": params}
  if state.batch_stats:
    variables["batch_stats"] = state.batch_stats
  if not train:
    return model.apply(variables, images, train=False), state.batch_stats
  logits, updates = model.apply(variables, images, train=True, mutable=["batch_stats"], rngs=rngs)
  return logits, updates.get("batch_stats", {})


def make_train_step(model: nn.Module, config: Config, axis_name: str | None = None):
  """Returns the pure `train_step(state, batch, key) -> (state, metrics)`.

  batch: {'image': [batch, h, w, c] uint8, 'label': [batch] int}. With
  `axis_name`, gradients, metrics and BatchNorm statistics are averaged across
  that axis (and BatchNorm normalises with cross-device statistics), so a
  pmapped step equals the single-device step on the global batch.
  """
  model = models.with_axis_name(model, axis_name)
  masks_for = forward_masks(config)
  mean = (lambda x: jax.lax.pmean(x, axis_name)) if axis_name else (lambda x: x)

  def train_step(state: TrainState, batch: dict, key: jax.Array):
    key = jax.random.fold_in(key, state.step)
    k_aug, k_mask, k_drop = jax.random.split(key, 3)
    local = batch["label"].shape[0]
    offset = jax.lax.axis_index(axis_name) * local if axis_name else 0
    images = _preprocess(batch["image"], config.dataset)
    images = augment.augment_batch(k_aug, images, flip=config.flip,
                                   max_translate=config.max_translate,
                                   max_rotate=config.max_rotate, crop_padding=config.crop_padding,
                                   fill=_preprocess(jnp.zeros(()), config.dataset), offset=offset)
    if axis_name:
      k_drop = jax.random.fold_in(k_drop, jax.lax.axis_index(axis_name))

    def loss_fn(trainable):
      current = state.replace(trainable=trainable)
      params = masking.apply_masks(trainable["params"], masks_for(current, k_mask, True),
                                   rescale=config.dynamic_rescale)
      logits, batch_stats = _apply(model, state, params, images, True, {"dropout": k_drop})
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
      return loss, (logits, batch_stats)

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.trainable)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
    grads, batch_stats = mean(grads), mean(batch_stats)
    metrics = mean({"loss": loss, "accuracy": accuracy})
    updates, opt_state = state.tx.update(grads, state.opt_state, state.trainable,
                                         value=1.0 - metrics["accuracy"])
    new_state = state.replace(step=state.step + 1,
                              trainable=optax.apply_updates(state.trainable, updates),
                              batch_stats=batch_stats, opt_state=opt_state)
    return new_state, metrics

  return train_step


def make_eval_step(model: nn.Module, config: Config, axis_name: str | None = None,
                   sampled: bool = False):
  """Returns the pure `eval_step(state, batch, key=None) -> sums`.

  batch may carry 'weight' [batch] (0 for padding). Returns sums, not means,
  so padded and sharded batches add up exactly: {'loss', 'correct', 'count',
  'masked_fraction'} (masked_fraction is of the evaluation mask, not a sum).
  With `sampled`, the mask is the training estimator's draw from `key` (Zhou et
  al. evaluate Bernoulli supermasks by sampling) instead of the deterministic one.
  """
  model = models.with_axis_name(model, axis_name)
  masks_for = forward_masks(config)
  total = (lambda x: jax.lax.psum(x, axis_name)) if axis_name else (lambda x: x)

  def eval_step(state: TrainState, batch: dict, key: jax.Array | None = None):
    masks = masks_for(state, key, sampled)
    params = masking.apply_masks(state.trainable["params"], masks, rescale=config.dynamic_rescale)
    logits, _ = _apply(model, state, params, _preprocess(batch["image"], config.dataset), False)
    weight = batch.get("weight", jnp.ones(batch["label"].shape, jnp.float32))
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
    correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
    sums = total({"loss": jnp.sum(loss * weight), "correct": jnp.sum(correct * weight),
                  "count": jnp.sum(weight)})
    sums["masked_fraction"] = masking.total_masked_fraction(masks) if masks else jnp.zeros(())
    return sums

  return eval_step


def make_multi_train_step(step, unroll: bool | None = None):
  """k steps in one compiled call (`lax.scan`), so small models are not bound by dispatch.

  `multi_step(state, batches, key) -> (state, metrics)`: batches and metrics carry a
  leading [k] axis; step i of the scan is exactly `step(state_i, batches[i], key)`. Where
  `batches` has 'valid' ([k] bool, see `data.stack_batches`), a step marked False leaves the
  state as it was (an epoch's padded last group runs the same program; its metrics are
  discarded by the caller).
  `unroll` (default: on CPU) lays the k steps out straight instead of in a loop: XLA:CPU
  lowers a convolution inside a loop body to a naive kernel, 40x slower than the same
  convolution outside one (conv6 measured; jax-ml/jax#12868).
  """
  if unroll is None:
    unroll = jax.default_backend() == "cpu"

  def one_step(state: TrainState, scanned, key: jax.Array):
    batch, valid = scanned
    new, metrics = step(state, batch, key)
    if valid is not None:
      new = jax.tree.map(lambda n, old: jnp.where(valid, n, old), new, state)
    return new, metrics

  def multi_step(state: TrainState, batches: dict, key: jax.Array):
    batch = {name: x for name, x in batches.items() if name != "valid"}
    return jax.lax.scan(lambda s, xs: one_step(s, xs, key), state,
                        (batch, batches.get("valid")), unroll=unroll)

  return multi_step


# --------------------------------------------------------------------------
# Parallelism: the only place that knows about devices.


def jit_train_step(step):
  """Single-device step with the state's buffers donated."""
  return jax.jit(step, donate_argnums=0)


def pmap_train_step(step):
  """pmap a step made with `axis_name='batch'`: state and batch sharded on axis 0,
  the key replicated (augmentation and masks stay independent of the device count)."""
  return jax.pmap(step, axis_name=AXIS, in_axes=(0, 0, None), donate_argnums=0)


def pmap_eval_step(step):
  """pmap an eval step made with `axis_name='batch'`; the key (or None) is replicated."""
  return jax.pmap(step, axis_name=AXIS, in_axes=(0, 0, None))


def replicate(tree: PyTree) -> PyTree:
  """One copy of every leaf on each local device (leading axis = device)."""
  devices = jax.local_devices()
  sharding = jax.sharding.NamedSharding(jax.sharding.Mesh(devices, (AXIS,)),
                                        jax.sharding.PartitionSpec(AXIS))

  def put(x):
    return jax.device_put(np.stack([np.asarray(x)] * len(devices)), sharding)

  return jax.tree.map(put, tree)


def unreplicate(tree: PyTree) -> PyTree:
  """The first device's copy of a replicated tree, on the host as numpy."""
  return jax.tree.map(lambda x: np.asarray(x[0]), tree)
