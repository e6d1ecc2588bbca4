import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from smjax import models
from smjax.models import winograd

NHWC = lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))  # flax's for 2D


def direct(x, w):
  return lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=NHWC,
                                  precision=lax.Precision.HIGHEST)


def inputs(shape, features, seed=0):
  kx, kw = jax.random.split(jax.random.key(seed))
  x = jax.random.normal(kx, shape)
  w = jax.random.normal(kw, (3, 3, shape[-1], features)) / np.sqrt(9 * shape[-1])
  return x, w


# Heights and widths on and off the 4x4 tile grid, 1 to 16 channels.
SHAPES = [(2, 8, 8, 3), (3, 14, 10, 4), (1, 5, 7, 2), (2, 4, 4, 16), (1, 1, 3, 1)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_equals_the_direct_convolution(shape):
  x, w = inputs(shape, 5)
  got = winograd.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=NHWC)
  assert got.shape == shape[:3] + (5,)
  np.testing.assert_allclose(got, direct(x, w), rtol=0, atol=2e-5 * float(jnp.abs(got).max()))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_gradients_equal_the_direct_convolutions(shape):
  """The custom VJP (Winograd input gradient, transform-domain weight gradient) against
  autodiff of the direct convolution, through a nonlinear loss."""
  x, w = inputs(shape, 5, seed=1)
  loss = lambda conv: lambda x, w: jnp.sum(jnp.sin(conv(x, w)))
  expected = jax.grad(loss(direct), (0, 1))(x, w)
  got = jax.jit(jax.grad(loss(winograd.conv3x3), (0, 1)))(x, w)
  for g, e in zip(got, expected):
    assert g.shape == e.shape
    np.testing.assert_allclose(g, e, rtol=0, atol=2e-5 * float(jnp.abs(e).max()))


def test_gradient_against_finite_differences():
  x, w = inputs((1, 6, 6, 2), 3, seed=2)
  x, w = x.astype(jnp.float32), w.astype(jnp.float32)
  f = lambda w: jnp.sum(winograd.conv3x3(x, w) ** 2)
  direction = jax.random.normal(jax.random.key(3), w.shape)
  eps = 1e-2
  numeric = (f(w + eps * direction) - f(w - eps * direction)) / (2 * eps)
  analytic = jnp.vdot(jax.grad(f)(w), direction)  # f is quadratic: central difference is exact
  np.testing.assert_allclose(analytic, numeric, rtol=1e-3)


@pytest.mark.parametrize("kwargs", [
    {"window_strides": (2, 2)}, {"padding": "VALID"}, {"padding": ((0, 2), (1, 1))},
    {"rhs_dilation": (2, 2)}, {"lhs_dilation": (2, 2), "padding": ((1, 1), (1, 1))}, {"kernel": (1, 1)}, {"kernel": (5, 5)},
    {"dtype": jnp.bfloat16}, {"dimension_numbers": ("NCHW", "OIHW", "NCHW")},
], ids=str)
def test_other_convolutions_take_xla_path_unchanged(kwargs):
  kwargs = dict(kwargs)
  kernel, dtype = kwargs.pop("kernel", (3, 3)), kwargs.pop("dtype", jnp.float32)
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 4)).astype(dtype)
  w = jax.random.normal(jax.random.key(1), (*kernel, 4, 4)).astype(dtype)
  args = {"window_strides": (1, 1), "padding": "SAME", "dimension_numbers": NHWC, **kwargs}
  if args["dimension_numbers"] != NHWC:
    x, w = x.transpose(0, 3, 1, 2), w.transpose(3, 2, 0, 1)
  assert not winograd.applies(x, w, **args)
  np.testing.assert_array_equal(winograd.conv_general_dilated(x, w, **args),
                                lax.conv_general_dilated(x, w, **args))


def test_applies_to_flax_same_padding_both_spellings():
  x, w = inputs((2, 8, 8, 4), 4)
  assert winograd.applies(x, w, (1, 1), "SAME", dimension_numbers=NHWC)
  assert winograd.applies(x, w, (1, 1), [(1, 1), (1, 1)], dimension_numbers=NHWC)
  assert winograd.applies(x, w, None, "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def test_conv_function_by_name():
  assert winograd.conv_function("xla", jnp.float32) is None
  assert winograd.conv_function("winograd", jnp.float32) is winograd.conv_general_dilated
  on_cpu = jax.default_backend() == "cpu"
  auto = winograd.conv_function("auto", jnp.float32)
  assert (auto is winograd.auto_conv_general_dilated) if on_cpu else auto is None
  assert winograd.conv_function("auto", jnp.bfloat16) is None
  with pytest.raises(ValueError, match="unknown conv_algorithm"):
    winograd.conv_function("fft", jnp.float32)


def test_model_with_winograd_convs_matches_xla():
  x = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
  plain = models.get("wrn10-1", 10)
  fast = models.get("wrn10-1", 10, conv=winograd.conv_general_dilated)
  variables = plain.init(jax.random.key(1), x, train=False)
  loss = lambda model: lambda v: jnp.sum(model.apply(v, x, train=False) ** 2)
  np.testing.assert_allclose(jax.jit(loss(fast))(variables), jax.jit(loss(plain))(variables),
                             rtol=1e-4)
  grads = jax.jit(jax.grad(loss(fast)))(variables), jax.jit(jax.grad(loss(plain)))(variables)
  for g, e in zip(*map(jax.tree.leaves, grads), strict=True):
    np.testing.assert_allclose(g, e, rtol=0, atol=1e-4 * float(jnp.abs(e).max()) + 1e-7)


def test_auto_leaves_small_layers_to_xla():
  conv = winograd.auto_conv_general_dilated
  big, w = inputs((2, 64, 64, 2), 2)  # 8192 positions
  small = big[:, :63]
  trace = lambda x: str(jax.make_jaxpr(lambda x: conv(x, w, (1, 1), "SAME",
                                                      dimension_numbers=NHWC))(x))
  assert "conv_general_dilated" not in trace(big) and "dot_general" in trace(big)
  assert "conv_general_dilated" in trace(small)
