"""Supermasks: score pytrees, binary mask estimators and their application.

A mask is never stored inside a layer. Scores live in their own pytree that
mirrors the *maskable* leaves of a flax params pytree (a nested dict holding
only those leaves), and masking is a pure transformation of params:

    effective = apply_masks(params, masks)     # kernel <- kernel * mask

Estimators turn scores into binary {0, 1} masks in the forward pass and pass
gradients straight through the binarisation in the backward pass.
`fraction` in top-k is always the fraction of weights **kept**.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from smjax.config import check_choice

PyTree = Any
Path = tuple[str, ...]

ESTIMATORS = ("threshold", "bernoulli", "topk")
SCORE_INITS = ("constant", "kaiming_uniform")


# --------------------------------------------------------------------------
# Estimators (jax.custom_vjp).


@jax.custom_vjp
def _threshold(scores, threshold):
  # sigmoid(s) > t  <=>  s > logit(t): one compare, no sigmoid in the forward pass.
  logit = jnp.log(threshold / (1 - threshold))  # exactly 0 at t = 0.5; +-inf at t = 1, 0
  return (scores > logit).astype(scores.dtype)


def _threshold_fwd(scores, threshold):
  return _threshold(scores, threshold), (scores, threshold)


def _sigmoid_grad(scores):
  """sigmoid'(s) = e / (1 + e)^2 with e = exp(-|s|): accurate where sigmoid saturates."""
  e = jnp.exp(-jnp.abs(scores))
  return e / jnp.square(1 + e)


def _threshold_bwd(res, g):
  scores, threshold = res
  return g * _sigmoid_grad(scores), jnp.zeros_like(threshold)


_threshold.defvjp(_threshold_fwd, _threshold_bwd)


def threshold_ste(scores: jax.Array, threshold: float | jax.Array = 0.5):
  """Deterministic supermask `1[sigmoid(s) > threshold]`, computed as `1[s > logit(threshold)]`.

  Backward: `g * sigmoid'(s)`, i.e. straight through the binarisation but not
  the sigmoid (Zhou et al., 2019, "Deconstructing Lottery Tickets").
  `threshold` may be traced; it receives a zero cotangent.
  """
  return _threshold(scores, jnp.asarray(threshold, scores.dtype))


@jax.custom_vjp
def _bernoulli(scores, uniform):
  return (uniform < jax.nn.sigmoid(scores)).astype(scores.dtype)


def _bernoulli_fwd(scores, uniform):
  return _bernoulli(scores, uniform), scores


def _bernoulli_bwd(scores, g):
  return g * _sigmoid_grad(scores), None


_bernoulli.defvjp(_bernoulli_fwd, _bernoulli_bwd)


def bernoulli_ste(scores: jax.Array, key: jax.Array):
  """Stochastic supermask `m ~ Bernoulli(sigmoid(s))` (Zhou et al., 2019).

  Backward: `g * sigmoid'(s)`, the straight-through estimator of the sample.
  """
  return _bernoulli(scores, uniform(key, scores.shape, scores.dtype))


def uniform(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
  """U[0, 1) like `jax.random.uniform`: the words of `jax.extend.random.threefry_2x32` over
  counters 0..size-1, as float32 mantissas.

  The hash is written out (`threefry2x32`), so XLA fuses it with the mask that uses the
  numbers: one pass, no counters or words in memory (a lenet300-100 Bernoulli step on CPU, A/B
  in one process: 2.33 ms with JAX's hash, 1.92 ms). Other key types go through
  `jax.random.uniform`.
  """
  typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
  if not typed or str(jax.random.key_impl(key)) != "threefry2x32" or not shape:
    return jax.random.uniform(key, shape, dtype)
  size = int(np.prod(shape))
  half = (size + 1) // 2  # threefry_2x32 pairs counter i with i + half
  first = jax.lax.iota(jnp.uint32, half)
  words = jnp.concatenate(threefry2x32(jax.random.key_data(key), first, first + np.uint32(half)))
  mantissa = (words[:size] >> 9) | jnp.uint32(0x3F800000)  # [1, 2) as float32 bits
  floats = jax.lax.bitcast_convert_type(mantissa, jnp.float32) - 1.0
  return floats.reshape(shape).astype(dtype)


_THREEFRY_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def threefry2x32(key_data: jax.Array, x0: jax.Array, x1: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The Threefry-2x32 hash (20 rounds; Salmon et al., 2011) of the uint32 counter pairs
  (x0, x1) under a uint32[2] key: the words `jax.extend.random.threefry_2x32` returns for
  x0 and x1, bit for bit.

  Written out because JAX lowers its own as a loop on CPU (shorter compiles), which XLA keeps
  as a while loop that copies the counters every iteration and cannot fuse with what uses the
  words.
  """
  k0, k1 = key_data[0], key_data[1]
  keys = (k0, k1, k0 ^ k1 ^ np.uint32(0x1BD11BDA))
  x0, x1 = x0 + keys[0], x1 + keys[1]
  for i in range(5):
    for r in _THREEFRY_ROTATIONS[i % 2]:
      x0 = x0 + x1
      x1 = x0 ^ ((x1 << np.uint32(r)) | (x1 >> np.uint32(32 - r)))
    x0 = x0 + keys[(i + 1) % 3]
    x1 = x1 + keys[(i + 2) % 3] + np.uint32(i + 1)
  return x0, x1


def kept_count(size: int, fraction: float) -> int:
  """Number of weights top-k keeps in a layer of `size` weights (at least 1)."""
  return max(1, min(size, int(round(fraction * size))))


def _count(mask: jax.Array) -> jax.Array:
  """Number of True entries. Counted as bfloat16 ones summed in float32: exact below 2**24,
  and the mask written as bfloat16 halves the bytes of each counting pass."""
  if mask.size < 2**24:
    return jnp.sum(mask.astype(jnp.bfloat16), dtype=jnp.float32).astype(jnp.int32)
  return jnp.sum(mask, dtype=jnp.int32)


_TIE_BLOCK = 1024


def _first_true(mask: jax.Array, n: jax.Array) -> jax.Array:
  """The first `n` True entries of a flat bool `mask`, in flat order (1 <= n <= count).

  Counts per block of `_TIE_BLOCK` entries find the block holding the n-th True and a
  cumulative sum inside that block finds its position: a few passes over `mask`, where a
  bisection over positions takes log2(size).
  """
  size = mask.size
  rows = -(-size // _TIE_BLOCK)
  blocks = jnp.pad(mask.astype(jnp.bfloat16), (0, rows * _TIE_BLOCK - size))
  blocks = blocks.reshape(rows, _TIE_BLOCK)  # 0/1, exact in bfloat16
  per_block = jnp.sum(blocks, axis=1, dtype=jnp.float32).astype(jnp.int32)
  ends = jnp.cumsum(per_block)  # [rows] Trues up to the end of each block
  row = jnp.sum(ends < n, dtype=jnp.int32)  # the block with the n-th True
  need = n - (ends[row] - per_block[row])  # its rank inside that block, >= 1
  in_block = jnp.cumsum(jax.lax.dynamic_index_in_dim(blocks, row, keepdims=False), dtype=jnp.int32)
  last = row * _TIE_BLOCK + jnp.argmax(in_block >= need)
  return mask & (jax.lax.iota(jnp.int32, size) <= last)


def _kth_largest_search(flat: jax.Array, k: int) -> jax.Array:
  """The k-th largest entry of a flat non-negative float32 array, without sorting.

  Non-negative floats order like their bits as int32, so the answer is the largest bit
  pattern t with count(flat >= t) >= k. The search keeps a bracket [lo, hi) and the counts at
  both ends, alternates a secant step (where the count would cross k if it were linear
  between them) with a bisection step, and stops once exactly k entries are >= lo. Each step
  is one counting pass; continuous scores take 9-16 (bisection alone: 28-31), and no input
  takes more than twice the bisection's.
  """
  as_bits = lambda x: jax.lax.bitcast_convert_type(x, jnp.int32)
  as_float = lambda b: jax.lax.bitcast_convert_type(b, jnp.float32)

  def body(state):
    lo, hi, count_lo, count_hi, i = state
    width = hi - lo
    secant = ((count_lo - k) / (count_lo - count_hi)) * width.astype(jnp.float32)
    step = jnp.where(i % 2 == 0, jnp.clip(secant.astype(jnp.int32), 1, width - 1), width // 2)
    mid = lo + step
    count = _count(flat >= as_float(mid))
    holds = count >= k
    return (jnp.where(holds, mid, lo), jnp.where(holds, hi, mid),
            jnp.where(holds, count, count_lo), jnp.where(holds, count_hi, count), i + 1)

  def searching(state):
    lo, hi, count_lo = state[:3]
    return (hi - lo > 1) & (count_lo != k)

  start = (as_bits(jnp.min(flat)), as_bits(jnp.max(flat)) + 1, jnp.int32(flat.size), jnp.int32(0),
           jnp.int32(0))
  lo = as_float(jax.lax.while_loop(searching, body, start)[0])
  # Exactly k entries >= lo, or lo is the k-th value itself: the smallest entry >= lo.
  return jnp.min(jnp.where(flat >= lo, flat, jnp.inf))


def _kth_largest_sort(flat: jax.Array, k: int) -> jax.Array:
  """The k-th largest entry of a flat float32 array, by one sort."""
  return jnp.sort(flat)[flat.size - k]


KTH_LARGEST = {"search": _kth_largest_search, "sort": _kth_largest_sort}


def kth_largest_method(backend: str | None = None) -> str:
  """How top-k finds its k-th value on `backend` (default: JAX's): a counting search on CPU,
  where a sort of every layer costs more than its 9-16 passes; a sort on accelerators, where
  each of the search's loop iterations waits on the host (WRN-28-10 on an H200: see README)."""
  return "search" if (backend or jax.default_backend()) == "cpu" else "sort"


def topk_flat_mask(flat: jax.Array, k: int, method: str) -> jax.Array:
  """Bool mask of the k largest entries of a flat non-negative array; ties at the k-th value
  are kept in flat order. `method`: a key of `KTH_LARGEST`."""
  kth = KTH_LARGEST[method](flat, k)
  at_least = flat >= kth

  def break_ties(_):  # keep the first ties at the k-th value, in flat order
    return (flat > kth) | _first_true(flat == kth, k - _count(flat > kth))

  return jax.lax.cond(_count(at_least) == k, lambda _: at_least, break_ties, None)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def topk_ste(scores: jax.Array, fraction: float):
  """Edge-popup mask: keep the `fraction` of weights with the largest |score|.

  `fraction` is the fraction **kept** (Ramanujan et al., 2020, "What's hidden
  in a randomly weighted neural network?"). Exactly `kept_count(size, fraction)`
  entries are 1: everything above the k-th largest |score|, then ties at it in
  flat order. Backward: straight through to |score|, then through the absolute
  value, `g * sign(score)` (sign(0) = 1), as edge-popup's `scores.abs()`; passing
  `g` to a negative score would move its |score| the wrong way.
  """
  flat = jnp.abs(scores.astype(jnp.float32)).reshape(-1)
  mask = topk_flat_mask(flat, kept_count(flat.size, fraction), kth_largest_method())
  return mask.astype(scores.dtype).reshape(scores.shape)


def _topk_fwd(scores, fraction):
  return topk_ste(scores, fraction), scores >= 0


def _topk_bwd(fraction, non_negative, g):
  del fraction
  return (jnp.where(non_negative, g, -g),)


topk_ste.defvjp(_topk_fwd, _topk_bwd)


def make_mask_fn(estimator: str, *, threshold: float = 0.5,
                 fraction: float = 0.5) -> Callable[..., PyTree]:
  """Returns `mask_fn(scores, key, train) -> masks` for a named estimator.

  Training masks use the estimator; evaluation masks are deterministic:
  `sigmoid(s) > threshold` for threshold, `sigmoid(s) > 0.5` for bernoulli
  and top-k for topk.
  """
  if estimator not in ESTIMATORS:
    raise ValueError(f"unknown estimator {estimator!r}; known: {', '.join(ESTIMATORS)}")

  def mask_fn(scores: PyTree, key: jax.Array | None, train: bool) -> PyTree:
    if estimator == "topk":
      return jax.tree.map(lambda s: topk_ste(s, fraction), scores)
    if estimator == "bernoulli" and train:
      leaves, treedef = jax.tree.flatten(scores)
      keys = jax.random.split(key, len(leaves))
      return treedef.unflatten([bernoulli_ste(s, k) for s, k in zip(leaves, keys)])
    t = threshold if estimator == "threshold" else 0.5
    return jax.tree.map(lambda s: threshold_ste(s, t), scores)

  return mask_fn


# --------------------------------------------------------------------------
# Score pytrees.


def is_kernel(path: Path, leaf: jax.Array) -> bool:
  """Default maskable predicate: every conv and dense `kernel`."""
  return path[-1] == "kernel" and leaf.ndim >= 2


def _layer(path: Path) -> str:
  return "/".join(path[:-1])


# Which leaves get a mask (config `mask_layers`): rule(path, leaf, layers) -> bool, where
# `layers` are the model's conv and dense layers in forward order (smjax.models.layer_order).
MASK_RULES: dict[str, Callable[[Path, jax.Array, Sequence[str]], bool]] = {
    "all": lambda path, leaf, layers: is_kernel(path, leaf),
    "conv": lambda path, leaf, layers: is_kernel(path, leaf) and leaf.ndim == 4,
    "dense": lambda path, leaf, layers: is_kernel(path, leaf) and leaf.ndim == 2,
    "hidden": lambda path, leaf, layers: (is_kernel(path, leaf)
                                          and _layer(path) not in (layers[0], layers[-1])),
}
BUILT_IN_RULES = tuple(MASK_RULES)


def register_mask_rule(name: str, rule: Callable[[Path, jax.Array, Sequence[str]], bool]) -> None:
  """Makes `name` a value of config `mask_layers`: `rule(path, leaf, layers)` says whether the
  params leaf at `path` (a tuple of names, e.g. ('Dense_1', 'kernel')) gets a mask; `layers`
  are the model's conv and dense layers in forward order ('Dense_0', ...). Register at the top
  level of your experiment module; a built-in name may not be replaced."""
  if name in BUILT_IN_RULES:
    raise ValueError(f"{name!r} is a built-in mask rule; register yours under another name")
  MASK_RULES[name] = rule


def check_config(config) -> None:
  """ValueError (one line) unless `config`'s estimator, score init and mask rule are known."""
  check_choice(config, "estimator", ESTIMATORS)
  check_choice(config, "score_init", SCORE_INITS)
  check_choice(config, "mask_layers", tuple(MASK_RULES))


def mask_predicate(rule: str, layers: Sequence[str]) -> Callable[[Path, jax.Array], bool]:
  """The `maskable_paths` predicate of the rule named `rule` for a model with `layers`."""
  if rule not in MASK_RULES:
    raise ValueError(f"unknown mask_layers {rule!r}; known: {', '.join(MASK_RULES)} (register "
                     "your own with smjax.masking.register_mask_rule)")
  chosen = MASK_RULES[rule]
  return lambda path, leaf: bool(chosen(path, leaf, layers))


def maskable_paths(params: PyTree, *, include_bias: bool = False,
                   predicate: Callable[[Path, jax.Array], bool] = is_kernel) -> list[Path]:
  """Paths of the leaves that get a mask.

  With `include_bias`, the bias of every layer that has a maskable kernel is
  masked too (as the original supermask blog code did); BatchNorm's
  scale/bias are never masked.
  """
  flat = traverse_util.flatten_dict(params)
  paths = [p for p, leaf in flat.items() if predicate(p, leaf)]
  if include_bias:
    owners = {p[:-1] for p in paths}
    paths += [p for p in flat if p[-1] == "bias" and p[:-1] in owners]
  return sorted(paths, key=natural_key)


def natural_key(path: Path):
  """Sort key that puts `block_2` before `block_10` (layer order)."""
  return [tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", part))
          for part in path]


def init_scores(params: PyTree, key: jax.Array, *, init: str = "constant",
                value: float = 1.0, include_bias: bool = False,
                predicate: Callable[[Path, jax.Array], bool] = is_kernel) -> PyTree:
  """Scores for every maskable leaf, as a nested dict mirroring `params`.

  Inits of the reference codes:
    constant:        every score = `value` (1.0 in the blog code, so
                     sigmoid = 0.73 and the mask starts full; 0.0 in Zhou et al.).
    kaiming_uniform: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), edge-popup's
                     kaiming_uniform(a=sqrt(5)).
  """
  if init not in SCORE_INITS:
    raise ValueError(f"unknown score init {init!r}; known: {', '.join(SCORE_INITS)}")
  flat = traverse_util.flatten_dict(params)
  paths = maskable_paths(params, include_bias=include_bias, predicate=predicate)
  keys = jax.random.split(key, max(len(paths), 1))
  uniform = jax.nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")
  scores = {}
  for path, k in zip(paths, keys):
    leaf = flat[path]
    if init == "constant" or leaf.ndim < 2:
      scores[path] = jnp.full(leaf.shape, value, leaf.dtype)
    else:
      scores[path] = uniform(k, leaf.shape, leaf.dtype)
  return traverse_util.unflatten_dict(scores)


def apply_masks(params: PyTree, masks: PyTree | None, *, rescale: bool = False) -> PyTree:
  """Effective params: every leaf with a mask is multiplied by it (pure).

  rescale: Zhou et al.'s dynamic weight rescaling: a leaf's kept weights are also scaled by
  its size over its kept count (at least 1), recomputed from the current mask and held
  constant in the backward pass."""
  if masks is None:
    return params
  flat = traverse_util.flatten_dict(params)
  for path, mask in traverse_util.flatten_dict(masks).items():
    mask = jnp.asarray(mask).astype(flat[path].dtype)
    if rescale:
      mask = mask * jax.lax.stop_gradient(mask.size / jnp.maximum(jnp.sum(mask), 1))
    flat[path] = flat[path] * mask
  return traverse_util.unflatten_dict(flat)


def signed_constant(params: PyTree, paths: list[Path]) -> PyTree:
  """Weight init variant: `sign(w) * std(w)` per maskable leaf.

  The signed-constant init of Zhou et al. (2019) and Ramanujan et al. (2020),
  with the layer's own init std as the constant.
  """
  flat = traverse_util.flatten_dict(params)
  for path in paths:
    w = flat[path]
    flat[path] = jnp.sign(w) * jnp.std(w)
  return traverse_util.unflatten_dict(flat)


def layer_stats(masks: PyTree, order: list[str] | None = None) -> list[dict]:
  """Per masked leaf: name, shape, n_weights, masked_fraction (share set to zero).

  Rows follow `order` (layer names in forward order, `smjax.models.layer_order`)
  where given, else natural name order. Works on jax or numpy arrays, e.g. a
  restored checkpoint.
  """
  flat = traverse_util.flatten_dict(masks)
  rank = {name: i for i, name in enumerate(order or [])}
  key = lambda path: (rank.get("/".join(path[:-1]), len(rank)), natural_key(path))
  rows = []
  for path in sorted(flat, key=key):
    m = np.asarray(flat[path])
    rows.append({
        "name": "/".join(path),
        "shape": list(m.shape),
        "n_weights": int(m.size),
        "masked_fraction": float(1.0 - np.count_nonzero(m) / m.size),
    })
  return rows


def total_masked_fraction(masks: PyTree) -> jax.Array:
  """Share of all masked weights that are zero (jit-able)."""
  leaves = jax.tree.leaves(masks)
  if not leaves:
    return jnp.zeros((), jnp.float32)
  kept = sum(jnp.sum(m != 0) for m in leaves)
  total = sum(m.size for m in leaves)
  return (total - kept) / total


def flatten_masks(masks: PyTree) -> dict[str, np.ndarray]:
  """{'layer/kernel': array} for saving or comparing masks outside JAX."""
  return {"/".join(path): np.asarray(m) for path, m in traverse_util.flatten_dict(masks).items()}


def _overlap(a: np.ndarray, b: np.ndarray) -> dict:
  a, b = a.astype(bool).ravel(), b.astype(bool).ravel()
  p, q = a.mean(), b.mean()  # kept fractions
  both, either = np.sum(a & b), np.sum(a | b)
  return {"n_weights": int(a.size), "kept_a": float(p), "kept_b": float(q),
          "jaccard": float(both / either) if either else 1.0,
          "hamming": int(np.sum(a != b)), "hamming_fraction": float(np.mean(a != b)),
          "agreement": float(np.mean(a == b)),
          "chance_agreement": float(p * q + (1 - p) * (1 - q)),
          "chance_jaccard": float(p * q / (p + q - p * q)) if p + q > 0 else 1.0}


def compare_masks(a: PyTree, b: PyTree, order: list[str] | None = None) -> dict:
  """Per-layer and total overlap of two binary masks of the same architecture.

  Jaccard of the kept weights, Hamming distance, and what two independent random
  masks with the same densities would give (agreement pq + (1-p)(1-q), Jaccard
  pq / (p + q - pq)).
  """
  fa, fb = flatten_masks(a), flatten_masks(b)
  if fa.keys() != fb.keys() or any(fa[k].shape != fb[k].shape for k in fa):
    raise ValueError("the two masks belong to different architectures")
  rank = {name: i for i, name in enumerate(order or [])}
  names = sorted(fa, key=lambda n: (rank.get(n.rsplit("/", 1)[0], len(rank)),
                                    natural_key(tuple(n.split("/")))))
  layers = [{"name": n, **_overlap(fa[n], fb[n])} for n in names]
  total = _overlap(np.concatenate([fa[n].ravel() for n in names]),
                   np.concatenate([fb[n].ravel() for n in names]))
  return {"layers": layers, "total": total}
