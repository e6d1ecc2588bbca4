"""2x2 max-pooling with the values and gradients of `nn.max_pool`, bit for bit, without
`reduce_window`.

XLA:CPU differentiates `reduce_window` max through a variadic reduce-window that tracks the
arg-max with four index arrays, about a third of a Conv-2 weight-training step on two cores
(docs/benchmarks.md). Here the pool is a reshape and a max; the gradient goes, as in XLA's
select-and-scatter, to the first maximum of each window in row-major order.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def max_pool(x: jax.Array, window: Sequence[int] = (2, 2), strides: Sequence[int] = (2, 2),
             padding: str = "VALID") -> jax.Array:
  """`nn.max_pool(x, window, strides, padding)`; non-overlapping 2x2 windows over an even
  height and width (where "SAME" adds no padding) take the reshape path."""
  _, height, width, _ = x.shape
  if tuple(window) == tuple(strides) == (2, 2) and height % 2 == 0 and width % 2 == 0:
    return _max_pool_2x2(x)
  return nn.max_pool(x, tuple(window), tuple(strides), padding=padding)


def _windows(x: jax.Array) -> jax.Array:
  """[batch, height, width, channels] -> [batch, height/2, 2, width/2, 2, channels]."""
  batch, height, width, channels = x.shape
  return x.reshape(batch, height // 2, 2, width // 2, 2, channels)


@jax.custom_jvp
def _max_pool_2x2(x: jax.Array) -> jax.Array:
  return _windows(x).max(axis=(2, 4))


@_max_pool_2x2.defjvp
def _max_pool_2x2_jvp(primals, tangents):
  (x,), (x_dot,) = primals, tangents
  windows = _windows(x)
  pooled = windows.max(axis=(2, 4))
  hit = windows == pooled[:, :, None, :, None, :]
  (h00, h01), (h10, h11) = [[hit[:, :, i, :, j] for j in range(2)] for i in range(2)]
  first = [[h00, h01 & ~h00], [h10 & ~(h00 | h01), h11 & ~(h00 | h01 | h10)]]
  first = jnp.stack([jnp.stack(row, axis=3) for row in first], axis=2)  # as `windows`
  return pooled, jnp.where(first, _windows(x_dot), 0).sum(axis=(2, 4))
