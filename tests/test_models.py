import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from smjax import models
from smjax.models.pooling import max_pool

SHAPES = [(28, 28, 1), (32, 32, 3), (8, 8, 1)]
NAMES = ["lenet300-100", "conv2", "conv4", "conv6", "wrn10-1"]


@pytest.mark.parametrize("name,shape", [(n, s) for n in NAMES for s in SHAPES] +
                         [("lenet5", s) for s in SHAPES[:2]], ids=str)  # 5x5 convs: not 8x8
def test_forward_backward_every_shape(name, shape):
  model = models.get(name, num_classes=7)
  x = jax.random.normal(jax.random.key(0), (2, *shape))
  variables = model.init(jax.random.key(1), x, train=False)
  logits = model.apply(variables, x, train=False)
  assert logits.shape == (2, 7) and bool(jnp.all(jnp.isfinite(logits)))

  def loss(params):
    out, _ = model.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"])
    return jnp.sum(out ** 2)

  grads = jax.grad(loss)(variables["params"])
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
  assert any(float(jnp.abs(g).sum()) > 0 for g in jax.tree.leaves(grads))


def n_params(name, shape=(32, 32, 3), **kwargs):
  model = models.get(name, 10, **kwargs)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *shape))))
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables["params"]))


def test_parameter_counts():
  assert round(n_params("wrn28-10") / 1e6, 1) == 36.5
  assert n_params("lenet300-100", (28, 28, 1)) == 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10
  assert n_params("lenet5", (28, 28, 1)) == (  # 28 -> 14 -> 10 -> 5: 16 x 5 x 5 features
      25 * 6 + 6 + 25 * 6 * 16 + 16 + 400 * 120 + 120 + 120 * 84 + 84 + 84 * 10 + 10)
  # maxpool downsampling has no strided convs but the same weights
  assert n_params("wrn16-4", downsampling="maxpool") == n_params("wrn16-4")


def test_maxpool_downsampling_and_dropout_run():
  model = models.get("wrn10-2", 10, downsampling="maxpool", dropout_rate=0.3)
  x = jnp.ones((2, 32, 32, 3))
  variables = model.init(jax.random.key(0), x)
  out, _ = model.apply(variables, x, train=True, mutable=["batch_stats"],
                       rngs={"dropout": jax.random.key(1)})
  assert out.shape == (2, 10)


@pytest.mark.parametrize("name", ["resnet50", "wrn27-10", "wrn28-0", "conv8"])
def test_unknown_models_are_refused(name):
  with pytest.raises(ValueError, match="wrn|unknown model"):
    models.get(name, 10)


def pool_input(dtype, height=16, width=16):
  """ReLU outputs (all-zero windows) with flat regions (exact positive ties), as crop padding
  makes them."""
  x = np.maximum(np.random.default_rng(0).normal(size=(4, height, width, 3)), 0)
  x[:, 4:10, 3:11] = 0.75
  x[0, 0, :2, 0] = 2.0  # a tie at the window's first row
  x[1, 0, 1, 1] = x[1, 1, 0, 1] = x[1, 1, 1, 1] = 3.0  # a tie without the first position
  return jnp.asarray(x, dtype)


def bits(x):
  return np.asarray(x).view(np.uint16 if x.dtype == jnp.bfloat16 else np.uint32)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=str)
@pytest.mark.parametrize("padding", ["VALID", "SAME"])
def test_max_pool_matches_flax_bit_for_bit(dtype, padding):
  x = pool_input(dtype)
  cotangent = jax.random.normal(jax.random.key(0), (4, 8, 8, 3), dtype)
  tangent = jax.random.normal(jax.random.key(1), x.shape, dtype)
  ours = lambda v: max_pool(v, (2, 2), (2, 2), padding)
  flax_pool = lambda v: nn.max_pool(v, (2, 2), (2, 2), padding=padding)
  for f in (lambda p: jax.vjp(p, x)[1](cotangent)[0], lambda p: jax.jvp(p, (x,), (tangent,))):
    want, got = jax.jit(lambda: f(flax_pool))(), jax.jit(lambda: f(ours))()
    for w, g in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
      np.testing.assert_array_equal(bits(g), bits(w))
  # the ties get the whole gradient at their first position, as select-and-scatter gives it
  grad = jax.vjp(ours, x)[1](cotangent)[0]
  assert grad[0, 0, 0, 0] == cotangent[0, 0, 0, 0] and grad[0, 0, 1, 0] == 0
  assert grad[1, 0, 1, 1] == cotangent[1, 0, 0, 1] and grad[1, 1, 1, 1] == 0


def test_max_pool_falls_back_on_odd_sizes():
  x = pool_input(jnp.float32, 7, 9)
  for padding in ("VALID", "SAME"):
    np.testing.assert_array_equal(max_pool(x, (2, 2), (2, 2), padding),
                                  nn.max_pool(x, (2, 2), (2, 2), padding=padding))
