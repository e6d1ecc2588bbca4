import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from smjax import optim

TRAINABLE = {
    "params": {"conv": {"kernel": jnp.full((3, 3, 1, 2), 0.5), "bias": jnp.ones((2,))},
               "bn": {"scale": jnp.ones((2,)), "bias": jnp.ones((2,))}},
    "scores": {"conv": {"kernel": jnp.full((3, 3, 1, 2), 0.25)}},
}
EXPECTED = {  # mode, train_bn -> labels of (conv kernel, conv bias, bn scale, scores)
    ("mask", False): ("freeze", "freeze", "freeze", "scores"),
    ("mask", True): ("freeze", "freeze", "weights", "scores"),
    ("weight", False): ("weights", "weights", "weights", "freeze"),
    ("finetune", False): ("weights", "weights", "weights", "freeze"),
}


@pytest.mark.parametrize("mode,train_bn", EXPECTED)
def test_partition_labels(mode, train_bn):
  labels = optim.partition_labels(mode, train_bn_with_mask=train_bn)(TRAINABLE)
  got = (labels["params"]["conv"]["kernel"], labels["params"]["conv"]["bias"],
         labels["params"]["bn"]["scale"], labels["scores"]["conv"]["kernel"])
  assert got == EXPECTED[mode, train_bn]


@pytest.mark.parametrize("mode", ["mask", "weight", "finetune"])
def test_frozen_leaves_bit_identical_under_weight_decay_and_momentum(mode):
  tx = optim.make_optimizer(mode, lr=0.1, weight_decay=0.5, momentum=0.9)
  state = tx.init(TRAINABLE)
  grads = jax.tree.map(jnp.ones_like, TRAINABLE)
  params = TRAINABLE
  for _ in range(3):
    updates, state = tx.update(grads, state, params, value=jnp.float32(0.5))
    params = optax.apply_updates(params, updates)
  labels = optim.partition_labels(mode)(TRAINABLE)
  for label, before, after in zip(jax.tree.leaves(labels), jax.tree.leaves(TRAINABLE),
                                  jax.tree.leaves(params), strict=True):
    assert np.array_equal(before, after) == (label == "freeze")


def test_weight_branch_is_sgd_with_decay():
  tx = optim.make_optimizer("weight", lr=0.1, weight_decay=0.01, momentum=0.0)
  grads = jax.tree.map(jnp.ones_like, TRAINABLE)
  updates, _ = tx.update(grads, tx.init(TRAINABLE), TRAINABLE, value=0.0)
  w = TRAINABLE["params"]["conv"]["kernel"]
  np.testing.assert_allclose(updates["params"]["conv"]["kernel"], -0.1 * (1 + 0.01 * w), rtol=1e-6)


def test_score_branch_is_adam_without_decay():
  tx = optim.make_optimizer("mask", lr=0.01, weight_decay=0.5)
  grads = jax.tree.map(lambda x: 3 * jnp.ones_like(x), TRAINABLE)
  updates, _ = tx.update(grads, tx.init(TRAINABLE), TRAINABLE, value=0.0)
  np.testing.assert_allclose(updates["scores"]["conv"]["kernel"], -0.01, rtol=1e-4)


def test_reduce_on_plateau_of_training_accuracy():
  steps = 4
  tx, learning_rate = optim.make("weight", lr=1.0, momentum=0.0, schedule="plateau",
                                 steps_per_epoch=steps, plateau_patience=2, plateau_factor=0.1)
  state = tx.init(TRAINABLE)
  grads = jax.tree.map(jnp.ones_like, TRAINABLE)
  lrs = []
  for epoch in range(6):
    for _ in range(steps):  # accuracy stuck at 0.6 -> value 0.4 every epoch
      updates, state = tx.update(grads, state, TRAINABLE, value=jnp.float32(0.4))
    lrs.append(learning_rate(state, epoch * steps))
    assert -float(updates["params"]["bn"]["bias"][0]) == pytest.approx(lrs[-1])
  # Keras semantics: reduce once 2 epochs in a row bring no improvement.
  np.testing.assert_allclose(lrs, [1, 1, 0.1, 0.1, 0.01, 0.01], rtol=1e-5)


@pytest.mark.parametrize("mode,leaf,rate", [("mask", ("scores", "conv", "kernel"), 0.3),
                                            ("weight", ("params", "conv", "kernel"), 0.2),
                                            ("finetune", ("params", "conv", "kernel"), 0.2)])
def test_learning_rate_is_the_rate_the_trained_branch_applies(mode, leaf, rate):
  """The reported rate is the cosine schedule's closed form, and it is what the update uses."""
  total = 8
  tx, learning_rate = optim.make(mode, lr=0.2, score_lr=0.3, optimizer="sgd",
                                 score_optimizer="sgd", momentum=0.0, schedule="cosine",
                                 total_steps=total)
  state = tx.init(TRAINABLE)
  grads = jax.tree.map(jnp.ones_like, TRAINABLE)
  for step in range(total):
    expected = rate * 0.5 * (1 + np.cos(np.pi * step / total))
    reported = learning_rate(state, step)
    assert reported == pytest.approx(expected, rel=1e-5)  # float32 schedule
    updates, state = tx.update(grads, state, TRAINABLE)
    np.testing.assert_allclose(updates[leaf[0]][leaf[1]][leaf[2]], -reported, rtol=1e-6)
