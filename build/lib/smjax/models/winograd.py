"""Winograd F(4x4, 3x3) convolution (Lavin & Gray, 2016, "Fast Algorithms for Convolutional
Neural Networks"): a 3x3 stride-1 convolution in 2.25x fewer multiplies than the direct one.

Each 6x6 input tile and each 3x3 kernel are mapped to a 6x6 transform domain, where the
convolution is 36 independent [tiles, c] x [c, k] matmuls; a 4x4 output tile comes back from
each. A `custom_vjp` keeps the backward pass in the same form: the input gradient is a second
Winograd convolution (of the output gradient with the rotated kernel) and the weight gradient
36 [c, tiles] x [tiles, k] matmuls on the forward's transformed tiles. Autodiff through the
transforms would instead sum 36 dilated pads, which XLA fuses into the BatchNorm backward that
consumes them and recomputes there (a slower step than XLA's own convolutions).

XLA:CPU runs convolutions with Eigen's direct kernels; on WRN-16-4's 3x3 stride-1 layers this
is faster in the forward pass and both gradients (`benchmarks/conv.py`). GPU
libraries pick their own algorithms (Winograd among them), so `conv_function("auto", ...)` uses
it on CPU only. Float32 only: the transforms' factors (up to 8 and down to 1/24) cost precision
that bfloat16 does not have to spare.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

ALGORITHMS = ("auto", "xla", "winograd")
NHWC = ("NHWC", "HWIO", "NHWC")
TILE = 4  # output tile m; input tile m + 2

# Y = AT [(G g G^T) * (BT d B)] A for a 6x6 input tile d and a 3x3 kernel g (Lavin & Gray, F(4,3)).
BT = np.array([[4, 0, -5, 0, 1, 0],
               [0, -4, -4, 1, 1, 0],
               [0, 4, -4, -1, 1, 0],
               [0, -2, -1, 2, 1, 0],
               [0, 2, -1, -2, 1, 0],
               [0, 4, 0, -5, 0, 1]], np.float32)
G = np.array([[1 / 4, 0, 0],
              [-1 / 6, -1 / 6, -1 / 6],
              [-1 / 6, 1 / 6, -1 / 6],
              [1 / 24, 1 / 12, 1 / 6],
              [1 / 24, -1 / 12, 1 / 6],
              [0, 0, 1]], np.float32)
AT = np.array([[1, 1, 1, 1, 1, 0],
               [0, 1, -1, 2, -2, 0],
               [0, 1, 1, 4, 4, 0],
               [0, 1, -1, 8, -8, 1]], np.float32)


def _combine(matrix: np.ndarray, parts: list[jax.Array]) -> list[jax.Array]:
  """[sum_j matrix[i, j] * parts[j] for each row i], skipping zeros (fused by XLA)."""
  return [sum(float(c) * p for c, p in zip(row, parts) if c) for row in matrix]


def input_transform(x: jax.Array) -> jax.Array:
  """x: [n, h, w, c] -> BT d B of every 6x6 tile (SAME padding): [36, n * th * tw, c]."""
  n, h, w, c = x.shape
  th, tw = -(-h // TILE), -(-w // TILE)
  xp = jnp.pad(x, ((0, 0), (1, TILE * th - h + 1), (1, TILE * tw - w + 1), (0, 0)))
  rows = [xp[:, i:i + TILE * th:TILE] for i in range(TILE + 2)]  # 6 x [n, th, w + 2, c]
  t = jnp.stack(_combine(BT, rows))  # [6, n, th, w + 2, c]
  cols = [t[:, :, :, j:j + TILE * tw:TILE] for j in range(TILE + 2)]  # 6 x [6, n, th, tw, c]
  return jnp.stack(_combine(BT, cols), axis=1).reshape(36, n * th * tw, c)


def kernel_transform(w: jax.Array, flip: bool = False) -> jax.Array:
  """w: [3, 3, c, k] -> G g G^T: [36, c, k]; `flip`: of the kernel rotated by 180 degrees.

  One [36, 9] x [9, c * k] matmul (an einsum over the 3x3 taps is 20x slower on CPU)."""
  taps = np.kron(G, G)[:, ::-1] if flip else np.kron(G, G)  # [36, 9]
  return (jnp.asarray(taps, w.dtype) @ w.reshape(9, -1)).reshape(36, *w.shape[2:])


def output_transform(m: jax.Array, shape: tuple[int, int, int, int]) -> jax.Array:
  """m: [36, n * th * tw, k] -> AT m A, the output tiles laid out as [n, h, w, k]."""
  n, h, w, k = shape
  th, tw = -(-h // TILE), -(-w // TILE)
  y = jnp.asarray(np.kron(AT, AT)) @ m.reshape(36, -1)  # [16, n * th * tw * k]
  y = y.reshape(TILE, TILE, n, th, tw, k).transpose(2, 3, 0, 4, 1, 5)
  return y.reshape(n, TILE * th, TILE * tw, k)[:, :h, :w]


def output_tiles(dy: jax.Array) -> jax.Array:
  """dy: [n, h, w, k] -> A dy AT of every 4x4 output tile: [36, n * th * tw, k] (transposes
  `output_transform`)."""
  n, h, w, k = dy.shape
  th, tw = -(-h // TILE), -(-w // TILE)
  dy = jnp.pad(dy, ((0, 0), (0, TILE * th - h), (0, TILE * tw - w), (0, 0)))
  dy = dy.reshape(n, th, TILE, tw, TILE, k).transpose(2, 4, 0, 1, 3, 5).reshape(16, -1)
  return (jnp.asarray(np.kron(AT, AT)).T @ dy).reshape(36, n * th * tw, k)


def _transform_domain(x, u, contract, shape, precision):
  """Input transform, 36 matmuls against u over its axis `contract`, output transform."""
  v = input_transform(x)  # [36, T, c]
  m = lax.dot_general(v, u, (((2,), (contract,)), ((0,), (0,))), precision=precision)
  return output_transform(m, shape), v


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv3x3(x: jax.Array, w: jax.Array, precision=None) -> jax.Array:
  """x: [n, h, w, c], w: [3, 3, c, k] -> [n, h, w, k]: a stride-1 SAME convolution."""
  return _forward(x, w, precision)[0]


def _forward(x, w, precision):
  u = kernel_transform(w).astype(x.dtype)  # [36, c, k]
  y, v = _transform_domain(x, u, 1, (*x.shape[:3], w.shape[-1]), precision)
  return y, (v, w)


def _backward(precision, residuals, dy):
  """The input gradient convolves dy with the rotated kernel, transposed: Winograd again; the
  weight gradient contracts the forward's transformed tiles with dy's over the tiles."""
  v, w = residuals
  u = kernel_transform(w, flip=True).astype(dy.dtype)  # [36, c, k], contracted over k
  dx, _ = _transform_domain(dy, u, 2, (*dy.shape[:3], w.shape[2]), precision)
  d = output_tiles(dy)  # [36, T, k]
  dw = lax.dot_general(v, d, (((1,), (1,)), ((0,), (0,))), precision=precision)  # [36, c, k]
  dw = jnp.asarray(np.kron(G, G).T, dw.dtype) @ dw.reshape(36, -1)  # [9, c * k]
  return dx, dw.reshape(w.shape).astype(w.dtype)


conv3x3.defvjp(_forward, _backward)


def applies(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
            dimension_numbers=None, feature_group_count=1, batch_group_count=1) -> bool:
  """Whether a `lax.conv_general_dilated` call is a float32 3x3 stride-1 SAME NHWC one."""
  if lhs.ndim != 4 or rhs.shape[:2] != (3, 3):
    return False
  plain = lambda s: s is None or tuple(s) == (1, 1)
  same = padding == "SAME" or (not isinstance(padding, str)
                               and [tuple(p) for p in padding] == [(1, 1), (1, 1)])
  nhwc = lax.conv_dimension_numbers(lhs.shape, rhs.shape, NHWC)
  return (lhs.dtype == rhs.dtype == jnp.float32 and same and plain(window_strides)
          and plain(lhs_dilation) and plain(rhs_dilation) and feature_group_count == 1
          and batch_group_count == 1 and dimension_numbers is not None
          and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == nhwc)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         batch_group_count=1, precision=None, preferred_element_type=None, *,
                         min_pixels: int = 0):
  """`lax.conv_general_dilated` that takes the Winograd path where `applies` says it can and
  the input has at least `min_pixels` batch x height x width positions."""
  if preferred_element_type is None and lhs.size // lhs.shape[-1] >= min_pixels and applies(
      lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
      feature_group_count, batch_group_count):
    return conv3x3(lhs, rhs, precision)
  return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                  dimension_numbers, feature_group_count, batch_group_count,
                                  precision, preferred_element_type)


# Below this many batch x height x width positions a layer has too few tiles for the transforms
# to pay (one fwd + bwd, 2 CPU cores: 128x8x8x256 0.53x XLA's time, 32x8x8x256 1.05x,
# 128x4x4x64 1.5x); "auto" leaves such layers, and small test batches, to XLA.
AUTO_MIN_PIXELS = 8192
auto_conv_general_dilated = functools.partial(conv_general_dilated, min_pixels=AUTO_MIN_PIXELS)


def conv_function(algorithm: str, dtype) -> Callable | None:
  """The `conv_general_dilated` of flax's nn.Conv for an algorithm name; None is XLA's.

  "auto" is Winograd for float32 on CPU, where it is the faster path, for layers of at least
  `AUTO_MIN_PIXELS` positions, and XLA's elsewhere. "winograd" uses it wherever it applies.
  """
  if algorithm not in ALGORITHMS:
    raise ValueError(f"unknown conv_algorithm {algorithm!r}; known: {ALGORITHMS}")
  if algorithm == "auto":
    cpu_float32 = jnp.dtype(dtype) == jnp.float32 and jax.default_backend() == "cpu"
    return auto_conv_general_dilated if cpu_float32 else None
  return conv_general_dilated if algorithm == "winograd" else None
