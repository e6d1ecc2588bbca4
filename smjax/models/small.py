"""Small networks of the lottery-ticket literature (Frankle & Carbin, 2019; Zhou et al., 2019)."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from smjax.models.pooling import max_pool


class MLP(nn.Module):
  """Fully connected ReLU network; `lenet300-100` is hidden=(300, 100)."""
  hidden: Sequence[int]
  num_classes: int
  axis_name: str | None = None  # unused: no cross-device state
  dtype: Any = jnp.float32
  conv: Callable | None = None  # unused: no convolutions

  @nn.compact
  def __call__(self, x, train: bool = False):  # x: [batch, height, width, channels]
    x = x.reshape(x.shape[0], -1).astype(self.dtype)
    for i, features in enumerate(self.hidden):
      x = nn.relu(nn.Dense(features, dtype=self.dtype, name=f"dense{i + 1}")(x))
    return nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x).astype(jnp.float32)


class ConvNet(nn.Module):
  """Conv-2/4/6: pairs of 3x3 convs (64, 128, 256 filters) each followed by
  2x2 max-pooling, then dense 256-256-classes."""
  conv_pairs: int
  num_classes: int
  axis_name: str | None = None  # unused: no cross-device state
  dtype: Any = jnp.float32
  conv: Callable | None = None  # lax.conv_general_dilated's stand-in; None: lax's own

  @nn.compact
  def __call__(self, x, train: bool = False):  # x: [batch, height, width, channels]
    x = x.astype(self.dtype)
    for pair in range(self.conv_pairs):
      for j in range(2):
        x = nn.relu(nn.Conv(64 * 2**pair, (3, 3), dtype=self.dtype,
                            conv_general_dilated=self.conv, name=f"conv{2 * pair + j + 1}")(x))
      x = max_pool(x, (2, 2), (2, 2), padding="SAME")
    x = x.reshape(x.shape[0], -1)
    for i in range(2):
      x = nn.relu(nn.Dense(256, dtype=self.dtype, name=f"dense{i + 1}")(x))
    return nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x).astype(jnp.float32)


class LeNet5(nn.Module):
  """LeNet-5 (LeCun et al., 1998) with ReLU and max-pooling: 5x5 convs of 6 ('SAME') and 16
  ('VALID') filters, each followed by 2x2 max-pooling, then dense 120-84-classes; 61.7k
  weights on 28x28 inputs. The convolutional net small enough to train MNIST on a CPU."""
  num_classes: int
  axis_name: str | None = None  # unused: no cross-device state
  dtype: Any = jnp.float32
  conv: Callable | None = None  # lax.conv_general_dilated's stand-in; None: lax's own

  @nn.compact
  def __call__(self, x, train: bool = False):  # x: [batch, height, width, channels]
    x = x.astype(self.dtype)
    for i, (features, padding) in enumerate(((6, "SAME"), (16, "VALID"))):
      x = nn.relu(nn.Conv(features, (5, 5), padding=padding, dtype=self.dtype,
                          conv_general_dilated=self.conv, name=f"conv{i + 1}")(x))
      x = max_pool(x, (2, 2), (2, 2))
    x = x.reshape(x.shape[0], -1)
    for i, features in enumerate((120, 84)):
      x = nn.relu(nn.Dense(features, dtype=self.dtype, name=f"dense{i + 1}")(x))
    return nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x).astype(jnp.float32)
