import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from smjax import data, masking, models, train
from smjax.config import Config

BASE = Config(dataset="digits", model="wrn10-1", batch_size=16)


@pytest.fixture(scope="module")
def batch():
  split = data.load("digits", val_size=0).train
  return {"image": split.images[:16], "label": split.labels[:16]}


def run_steps(config, batch, n, masks=None, key=0):
  model = models.get(config.model, 10)
  state = train.create_state(jax.random.key(key), model, (8, 8, 1), config, masks=masks)
  step = jax.jit(train.make_train_step(model, config))
  history = []
  for _ in range(n):
    state, metrics = step(state, batch, jax.random.key(7))
    history.append(metrics)
  return model, state, history


def eval_loss(model, config, state, batch):
  sums = jax.jit(train.make_eval_step(model, config))(state, batch)
  return float(sums["loss"] / sums["count"])


def assert_trees_equal(a, b):
  chex.assert_trees_all_equal(a, b, strict=True)


def assert_no_negative_zero(tree):
  for x in jax.tree.leaves(tree):
    x = np.asarray(x)
    assert not np.any((x == 0) & np.signbit(x))


@pytest.mark.parametrize("estimator", masking.ESTIMATORS)
def test_mask_mode_trains_only_scores(batch, estimator):
  config = BASE.replace(mode="mask", estimator=estimator, score_lr=0.1)
  model = models.get(config.model, 10)
  init = train.create_state(jax.random.key(0), model, (8, 8, 1), config)
  assert_no_negative_zero(init.trainable["params"])
  _, state, history = run_steps(config, batch, 40)
  assert_trees_equal(state.trainable["params"], init.trainable["params"])
  changed = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(init.trainable["scores"]),
                                                      jax.tree.leaves(state.trainable["scores"]))]
  assert all(changed)
  stats = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(init.batch_stats),
                                                    jax.tree.leaves(state.batch_stats))]
  assert all(stats)
  losses = [float(m["loss"]) for m in history]
  assert np.mean(losses[-3:]) < losses[0] - 0.1, losses


def test_mask_mode_can_train_batchnorm(batch):
  config = BASE.replace(mode="mask", train_bn_with_mask=True)
  model = models.get(config.model, 10)
  init = train.create_state(jax.random.key(0), model, (8, 8, 1), config)
  _, state, _ = run_steps(config, batch, 2)
  assert not np.array_equal(init.trainable["params"]["bn_final"]["scale"],
                            state.trainable["params"]["bn_final"]["scale"])
  assert_trees_equal(init.trainable["params"]["stem"], state.trainable["params"]["stem"])


def test_weight_mode_equals_plain_optax_loop(batch):
  config = BASE.replace(mode="weight", lr=0.05, momentum=0.9)
  model, state, history = run_steps(config, batch, 4)
  init = train.create_state(jax.random.key(0), model, (8, 8, 1), config)
  assert_trees_equal(state.trainable["scores"], init.trainable["scores"])

  # A plain flax + optax loop with no masking code.
  variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)), train=False)
  params, batch_stats = variables["params"], variables["batch_stats"]
  tx = optax.sgd(0.05, momentum=0.9)
  opt_state = tx.init(params)
  _, mean, std = data.input_scaling("digits")
  x = (batch["image"].astype(np.float32) / 255 - mean[0]) / std[0]

  @jax.jit
  def plain_step(params, batch_stats, opt_state):
    def loss_fn(p):
      logits, upd = model.apply({"params": p, "batch_stats": batch_stats}, x, train=True,
                                mutable=["batch_stats"])
      return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean(), upd
    (loss, upd), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), upd["batch_stats"], opt_state, loss

  for metrics in history:
    params, batch_stats, opt_state, loss = plain_step(params, batch_stats, opt_state)
    np.testing.assert_allclose(metrics["loss"], loss, rtol=1e-5)
  chex.assert_trees_all_close(params, state.trainable["params"], rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(batch_stats, state.batch_stats, rtol=1e-5, atol=1e-6)


def test_finetune_keeps_mask_and_applies_configured_lr(batch):
  lr = 0.1
  config = BASE.replace(mode="finetune", lr=lr, momentum=0.0)
  model = models.get(config.model, 10)
  scores = train.create_state(jax.random.key(1), model, (8, 8, 1),
                              config.replace(mode="mask")).trainable["scores"]
  masks = masking.make_mask_fn("threshold")(scores, None, False)
  init = train.create_state(jax.random.key(0), model, (8, 8, 1), config, masks=masks)
  _, one, _ = run_steps(config, batch, 1, masks=masks)
  _, state, _ = run_steps(config, batch, 3, masks=masks)
  assert_trees_equal(state.masks, masks)
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(init.trainable["params"]),
                                                      jax.tree.leaves(state.trainable["params"])))

  # One SGD step moves params by exactly -lr * grad of the masked network.
  _, mean, std = data.input_scaling("digits")
  x = (batch["image"].astype(np.float32) / 255 - mean[0]) / std[0]

  def loss_fn(p):
    eff = masking.apply_masks(p, masks)
    logits, _ = model.apply({"params": eff, "batch_stats": init.batch_stats}, x, train=True,
                            mutable=["batch_stats"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()

  grads = jax.grad(loss_fn)(init.trainable["params"])
  for p0, p1, g in zip(jax.tree.leaves(init.trainable["params"]),
                       jax.tree.leaves(one.trainable["params"]), jax.tree.leaves(grads), strict=True):
    np.testing.assert_allclose(p1 - p0, -lr * g, rtol=1e-3, atol=1e-7)
  kernel = ("stage1_block1", "conv1", "kernel")
  pruned = np.asarray(masks[kernel[0]][kernel[1]][kernel[2]]) == 0
  before = np.asarray(init.trainable["params"][kernel[0]][kernel[1]][kernel[2]])
  after = np.asarray(state.trainable["params"][kernel[0]][kernel[1]][kernel[2]])
  np.testing.assert_array_equal(after[pruned], before[pruned])  # no gradient reaches pruned weights


def test_finetune_requires_masks():
  with pytest.raises(ValueError, match="finetune"):
    train.create_state(jax.random.key(0), models.get("conv2", 10), (8, 8, 1),
                       BASE.replace(mode="finetune", model="conv2"))


def test_modes_share_bit_identical_init():
  model = models.get("wrn10-1", 10)
  a = train.create_state(jax.random.key(3), model, (8, 8, 1), BASE.replace(mode="mask"))
  b = train.create_state(jax.random.key(3), model, (8, 8, 1), BASE.replace(mode="weight"))
  assert_trees_equal(a.trainable, b.trainable)
  assert_trees_equal(a.batch_stats, b.batch_stats)


def test_jitted_step_compiles_once(batch):
  config = BASE.replace(model="lenet300-100")
  model = models.get(config.model, 10)
  state = train.create_state(jax.random.key(0), model, (8, 8, 1), config)
  step = train.jit_train_step(train.make_train_step(model, config))
  for i in range(3):
    state, _ = step(state, batch, jax.random.key(i))
  assert step._cache_size() == 1


@pytest.mark.parametrize("estimator,conv_algorithm",
                         [("threshold", "xla"), ("bernoulli", "xla"), ("threshold", "winograd")])
def test_pmap_on_4_devices_equals_single_device(batch, estimator, conv_algorithm):
  assert jax.local_device_count() == 4
  # SGD on scores: Adam divides near-zero gradients by their own magnitude, which turns
  # float reduction-order noise (~1e-9) into lr-sized steps, in any implementation.
  config = BASE.replace(mode="mask", estimator=estimator, score_optimizer="sgd", score_lr=1.0, flip=True,
                        max_translate=0.2, max_rotate=15.0, conv_algorithm=conv_algorithm)
  model = models.from_config(config, 10)
  state = train.create_state(jax.random.key(0), model, (8, 8, 1), config)
  single = jax.jit(train.make_train_step(model, config))
  multi = train.pmap_train_step(train.make_train_step(model, config, axis_name=train.AXIS))
  s_state, p_state = state, train.replicate(state)
  sharded = jax.tree.map(lambda x: x.reshape(4, -1, *x.shape[1:]), batch)
  for i in range(3):
    s_state, s_metrics = single(s_state, batch, jax.random.key(i))
    p_state, p_metrics = multi(p_state, sharded, jax.random.key(i))
    for a, b in zip(jax.tree.leaves(s_metrics), jax.tree.leaves(p_metrics), strict=True):
      np.testing.assert_allclose(np.asarray(b), np.broadcast_to(a, (4,)), atol=1e-5)
  p_state = train.unreplicate(p_state)
  assert not np.array_equal(s_state.trainable["scores"]["head"]["kernel"],
                            state.trainable["scores"]["head"]["kernel"])
  for field in ("trainable", "batch_stats"):
    chex.assert_trees_all_close(getattr(s_state, field), getattr(p_state, field), atol=1e-5)

  s_sums = jax.jit(train.make_eval_step(model, config))(s_state, batch)
  p_sums = train.pmap_eval_step(train.make_eval_step(model, config, axis_name=train.AXIS))(
      train.replicate(p_state), sharded, None)
  for key in ("loss", "correct", "count"):
    np.testing.assert_allclose(p_sums[key][0], s_sums[key], rtol=1e-5)


def test_scanned_multi_step_equals_the_step_loop(batch):
  # SGD on scores, as in the pmap test: Adam turns float-order noise into lr-sized steps.
  config = BASE.replace(mode="mask", model="conv2", score_optimizer="sgd", score_lr=1.0, flip=True,
                        max_rotate=10.0)
  model = models.get(config.model, 10)
  state = train.create_state(jax.random.key(0), model, (8, 8, 1), config)
  step = train.make_train_step(model, config)
  batches = [jax.tree.map(lambda x: np.roll(x, i, axis=0), batch) for i in range(3)]
  looped, metrics = state, []
  for b in batches:
    looped, m = jax.jit(step)(looped, b, jax.random.key(5))
    metrics.append(m["loss"])
  stacked = jax.tree.map(lambda *xs: np.stack(xs), *batches)
  scanned, m = jax.jit(train.make_multi_train_step(step))(state, stacked, jax.random.key(5))
  assert int(scanned.step) == 3
  np.testing.assert_allclose(m["loss"], metrics, rtol=1e-5)
  chex.assert_trees_all_close(looped.trainable, scanned.trainable, rtol=1e-5, atol=1e-6)

  # Padded to 5 steps, the last two marked invalid: the same three steps, the padding changes nothing.
  padded = jax.tree.map(lambda x: np.concatenate([x, x[-1:], x[-1:]]), stacked)
  padded["valid"] = np.array([True, True, True, False, False])
  state_p, m_p = jax.jit(train.make_multi_train_step(step))(state, padded, jax.random.key(5))
  assert int(state_p.step) == 3
  np.testing.assert_allclose(m_p["loss"][:3], metrics, rtol=1e-5)
  chex.assert_trees_all_close(looped, state_p, rtol=1e-5, atol=1e-6)
