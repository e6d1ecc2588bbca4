import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend import random as jex_random

from smjax import masking

MODES = {"eager": lambda f: f, "jit": jax.jit}


def sigmoid(s):
  return 1 / (1 + np.exp(-np.asarray(s, np.float64)))


def sigmoid_grad(s):
  return sigmoid(s) * sigmoid(-np.asarray(s, np.float64))  # p (1 - p) without cancellation


@pytest.mark.parametrize("wrap", MODES.values(), ids=MODES.keys())
@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.9])
def test_threshold_ste_forward_and_grad(wrap, threshold):
  s = jnp.linspace(-4, 4, 37, dtype=jnp.float32).reshape(37, 1)
  g = jnp.arange(37, dtype=jnp.float32).reshape(37, 1) / 10
  m = wrap(masking.threshold_ste)(s, threshold)
  np.testing.assert_array_equal(m, (sigmoid(s) > threshold).astype(np.float32))
  assert m.dtype == s.dtype and m.shape == s.shape
  grad = wrap(jax.grad(lambda s: jnp.sum(masking.threshold_ste(s, threshold) * g)))(s)
  np.testing.assert_allclose(grad, g * sigmoid_grad(np.asarray(s)), rtol=1e-6)


def test_sigmoid_grad_is_accurate_where_sigmoid_saturates():
  s = jnp.array([-30.0, -12.0, 12.0, 30.0])
  grad = jax.grad(lambda s: jnp.sum(masking.threshold_ste(s, 0.5)))(s)
  assert np.all(np.asarray(grad) > 0)  # 1 - sigmoid(30) rounds to 0 in float32
  np.testing.assert_allclose(grad, sigmoid_grad(s), rtol=1e-6)


def test_uniform_matches_distribution_and_key_semantics():
  key = jax.random.key(3)
  u = masking.uniform(key, (1001, 3))  # odd size: one spare word
  assert u.shape == (1001, 3) and u.dtype == jnp.float32
  assert float(u.min()) >= 0.0 and float(u.max()) < 1.0
  assert abs(float(u.mean()) - 0.5) < 5 * np.sqrt(1 / 12 / u.size)
  np.testing.assert_array_equal(u, masking.uniform(key, (1001, 3)))
  assert not np.array_equal(u, masking.uniform(jax.random.key(4), (1001, 3)))
  # deciles equally filled (chi-square, 9 dof, p ~ 1e-6 at 50)
  counts = np.bincount((np.asarray(u).ravel() * 10).astype(int), minlength=10)
  assert np.sum((counts - u.size / 10) ** 2 / (u.size / 10)) < 50
  rbg = jax.random.key(3, impl="rbg")  # other key types: jax.random.uniform
  np.testing.assert_array_equal(masking.uniform(rbg, (5,)), jax.random.uniform(rbg, (5,)))


@pytest.mark.parametrize("size", [1, 2, 7, 1000])
def test_threefry_is_jax_threefry_bit_for_bit(size):
  """The written-out hash and `uniform` reproduce `jax.extend.random.threefry_2x32`."""
  rng = np.random.default_rng(size)
  key_data = jnp.asarray(rng.integers(0, 2**32, 2, dtype=np.uint32))
  counters = jnp.asarray(rng.integers(0, 2**32, 2 * size, dtype=np.uint32))
  x0, x1 = jax.jit(masking.threefry2x32)(key_data, counters[:size], counters[size:])
  np.testing.assert_array_equal(jnp.concatenate([x0, x1]),
                                jex_random.threefry_2x32(key_data, counters))
  key = jax.random.key(size)  # uniform: the words over counters 0..size-1 (padded to even)
  words = jex_random.threefry_2x32(jax.random.key_data(key),
                                   jnp.arange(size + size % 2, dtype=jnp.uint32))[:size]
  expected = jax.lax.bitcast_convert_type((words >> 9) | 0x3F800000, jnp.float32) - 1.0
  np.testing.assert_array_equal(masking.uniform(key, (size,)), expected)


def test_threshold_is_traceable_with_zero_cotangent():
  s = jnp.array([0.1, -0.2, 2.0])
  dt = jax.grad(lambda t: jnp.sum(masking.threshold_ste(s, t)))(0.5)
  assert dt == 0.0


@pytest.mark.parametrize("wrap", MODES.values(), ids=MODES.keys())
def test_bernoulli_ste_mean_and_grad(wrap):
  s = jnp.array([-2.0, -0.5, 0.0, 1.0, 3.0])
  keys = jax.random.split(jax.random.key(0), 4000)
  samples = wrap(jax.vmap(masking.bernoulli_ste, in_axes=(None, 0)))(s, keys)
  assert set(np.unique(samples)) <= {0.0, 1.0}
  p = 1 / (1 + np.exp(-np.asarray(s)))
  # 5 standard errors of a mean of 4000 Bernoulli draws.
  np.testing.assert_array_less(np.abs(samples.mean(0) - p), 5 * np.sqrt(p * (1 - p) / 4000) + 1e-9)
  g = jnp.array([1.0, -2.0, 3.0, 0.5, 1.5])
  grad = wrap(jax.grad(lambda s: jnp.sum(masking.bernoulli_ste(s, keys[0]) * g)))(s)
  np.testing.assert_allclose(grad, g * sigmoid_grad(np.asarray(s)), rtol=1e-6)


@pytest.mark.parametrize("wrap", MODES.values(), ids=MODES.keys())
@pytest.mark.parametrize("fraction", [0.01, 0.3, 0.5, 1.0])
def test_topk_keeps_exact_count_of_largest_abs(wrap, fraction):
  s = jax.random.normal(jax.random.key(1), (3, 3, 4, 8))
  m = wrap(masking.topk_ste, static_argnums=1)(s, fraction) if wrap is jax.jit else masking.topk_ste(
      s, fraction)
  k = masking.kept_count(s.size, fraction)
  assert int(m.sum()) == k and m.shape == s.shape
  kept, dropped = np.abs(s)[m == 1], np.abs(s)[m == 0]
  if dropped.size:
    assert kept.min() >= dropped.max()
  g = jax.random.normal(jax.random.key(2), s.shape)
  grad = jax.grad(lambda s: jnp.sum(masking.topk_ste(s, fraction) * g))(s)
  np.testing.assert_array_equal(grad, np.where(s >= 0, g, -g))  # through |s|, as edge-popup


def topk_reference(s, k):
  """Numpy: the k largest |s|, ties at the k-th value kept in flat order."""
  flat = np.abs(np.asarray(s)).ravel()
  order = np.lexsort((np.arange(flat.size), -flat))  # by |s| descending, then index
  mask = np.zeros(flat.size, np.float32)
  mask[order[:k]] = 1
  return mask.reshape(np.shape(s))


@pytest.mark.parametrize("scores", [np.ones((10, 10)),  # all tied: no bisection step
                                    np.repeat(np.arange(-5.0, 5.0), 10).reshape(10, 10),
                                    np.random.default_rng(0).normal(size=(40, 30)),
                                    np.ones((50, 70)),  # ties over several tie blocks
                                    np.round(np.random.default_rng(1).normal(size=(300, 100)), 1),
                                    np.random.default_rng(2).standard_cauchy((60, 50)),  # heavy tails
                                    np.random.default_rng(3).uniform(-0.04, 0.04, (784, 30)),
                                    np.where(np.arange(3000) % 20 == 0, 1.0,  # ties at a few values
                                             np.random.default_rng(4).normal(1.0, 0.01, 3000))])
@pytest.mark.parametrize("fraction", [0.01, 0.37, 0.5, 1.0])
def test_topk_matches_reference_with_and_without_ties(scores, fraction):
  s = jnp.asarray(scores, jnp.float32)
  k = masking.kept_count(s.size, fraction)
  np.testing.assert_array_equal(jax.jit(masking.topk_ste, static_argnums=1)(s, fraction),
                                topk_reference(s, k))
  flat = jnp.abs(s).ravel()
  for method in masking.KTH_LARGEST:  # the accelerators' method too, here on CPU
    mask = jax.jit(masking.topk_flat_mask, static_argnums=(1, 2))(flat, k, method)
    np.testing.assert_array_equal(mask.reshape(s.shape), topk_reference(s, k), err_msg=method)


def test_kth_largest_method_by_backend():
  assert masking.kth_largest_method("cpu") == "search"
  assert masking.kth_largest_method("gpu") == masking.kth_largest_method("tpu") == "sort"


PARAMS = {
    "conv": {"kernel": jnp.ones((3, 3, 2, 4)), "bias": jnp.ones((4,))},
    "bn": {"scale": jnp.ones((4,)), "bias": jnp.zeros((4,))},
    "block_10": {"dense": {"kernel": jnp.ones((4, 3)), "bias": jnp.ones((3,))}},
    "block_2": {"dense": {"kernel": jnp.ones((5, 3))}},
}


def test_maskable_paths_kernels_then_biases_never_bn():
  assert masking.maskable_paths(PARAMS) == [("block_2", "dense", "kernel"),
                                            ("block_10", "dense", "kernel"), ("conv", "kernel")]
  with_bias = masking.maskable_paths(PARAMS, include_bias=True)
  assert ("conv", "bias") in with_bias and ("block_10", "dense", "bias") in with_bias
  assert ("bn", "bias") not in with_bias


def test_init_scores_constant_and_kaiming_uniform():
  key = jax.random.key(0)
  scores = masking.init_scores(PARAMS, key, init="constant", value=1.0)
  assert set(scores) == {"conv", "block_10", "block_2"} and "bias" not in scores["conv"]
  np.testing.assert_array_equal(scores["conv"]["kernel"], np.ones((3, 3, 2, 4)))
  ku = masking.init_scores({"k": {"kernel": jnp.ones((3, 3, 16, 64))}}, key, init="kaiming_uniform")
  s = np.asarray(ku["k"]["kernel"])
  bound = 1 / np.sqrt(3 * 3 * 16)
  assert np.abs(s).max() <= bound and np.abs(s).max() > 0.9 * bound
  np.testing.assert_allclose(s.std(), bound / np.sqrt(3), rtol=0.05)
  with pytest.raises(ValueError, match="unknown score init"):
    masking.init_scores(PARAMS, key, init="zeros")


def test_apply_masks_and_layer_stats():
  masks = {"conv": {"kernel": jnp.zeros((3, 3, 2, 4)).at[0].set(1)},
           "block_2": {"dense": {"kernel": jnp.ones((5, 3))}}}
  eff = masking.apply_masks(PARAMS, masks)
  np.testing.assert_array_equal(eff["conv"]["kernel"], masks["conv"]["kernel"])
  np.testing.assert_array_equal(eff["conv"]["bias"], PARAMS["conv"]["bias"])
  np.testing.assert_array_equal(eff["block_10"]["dense"]["kernel"], PARAMS["block_10"]["dense"]["kernel"])
  assert masking.apply_masks(PARAMS, None) is PARAMS
  rows = masking.layer_stats(masks)
  assert [r["name"] for r in rows] == ["block_2/dense/kernel", "conv/kernel"]
  assert rows[1] == {"name": "conv/kernel", "shape": [3, 3, 2, 4], "n_weights": 72,
                     "masked_fraction": pytest.approx(48 / 72)}
  assert float(masking.total_masked_fraction(masks)) == pytest.approx(48 / 87)


@pytest.mark.parametrize("estimator", masking.ESTIMATORS)
def test_evaluation_mask_is_deterministic(estimator):
  fn = masking.make_mask_fn(estimator, fraction=0.5)
  scores = {"a": {"kernel": jax.random.normal(jax.random.key(3), (8, 8))}}
  m1, m2 = fn(scores, None, False), fn(scores, None, False)
  np.testing.assert_array_equal(m1["a"]["kernel"], m2["a"]["kernel"])
  if estimator != "topk":
    np.testing.assert_array_equal(m1["a"]["kernel"], np.asarray(scores["a"]["kernel"]) > 0)


def test_signed_constant():
  w = jax.random.normal(jax.random.key(0), (50, 20))
  out = masking.signed_constant({"d": {"kernel": w}}, [("d", "kernel")])["d"]["kernel"]
  np.testing.assert_allclose(np.abs(out), np.std(np.asarray(w)), rtol=1e-5)
  np.testing.assert_array_equal(np.sign(out), np.sign(w))
