"""Pre-activation Wide ResNet (Zagoruyko & Komodakis, 2016, "Wide Residual Networks")."""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

from smjax.models.pooling import max_pool

DOWNSAMPLING = ("stride", "maxpool")


class WideBlock(nn.Module):
  """BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3, with a 1x1 projection shortcut."""
  features: int
  strides: int
  dropout_rate: float
  norm: Any
  dtype: Any = jnp.float32
  conv: Callable | None = None

  @nn.compact
  def __call__(self, x, train: bool):
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype,
                             conv_general_dilated=self.conv)
    pre = nn.relu(self.norm(name="bn1")(x))
    y = conv(self.features, (3, 3), self.strides, name="conv1")(pre)
    y = nn.relu(self.norm(name="bn2")(y))
    y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
    y = conv(self.features, (3, 3), name="conv2")(y)
    if x.shape[-1] != self.features or self.strides != 1:
      x = conv(self.features, (1, 1), self.strides, name="shortcut")(pre)
    return y + x


class WideResNet(nn.Module):
  """WRN-`depth`-`width`: three stages of (depth - 4) / 6 blocks of width 16k, 32k, 64k.

  `downsampling="stride"` halves the resolution with strided convolutions (the
  paper); `"maxpool"` uses 2x2 max-pooling between stages and stride-1 blocks,
  as keras-contrib's WRN does. `axis_name` synchronises BatchNorm statistics
  across devices under pmap.
  """
  depth: int
  width: int
  num_classes: int
  dropout_rate: float = 0.0
  downsampling: str = "stride"
  axis_name: str | None = None
  dtype: Any = jnp.float32
  conv: Callable | None = None  # lax.conv_general_dilated's stand-in; None: lax's own

  @nn.compact
  def __call__(self, x, train: bool = False):  # x: [batch, height, width, channels]
    if (self.depth - 4) % 6 or self.depth < 10:
      raise ValueError(f"WRN depth must be 6n + 4 with n >= 1, got {self.depth}")
    blocks = (self.depth - 4) // 6
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                             epsilon=1e-5, axis_name=self.axis_name, dtype=self.dtype)
    x = nn.Conv(16, (3, 3), use_bias=False, dtype=self.dtype, conv_general_dilated=self.conv,
                name="stem")(x.astype(self.dtype))
    for stage, features in enumerate((16 * self.width, 32 * self.width, 64 * self.width)):
      for block in range(blocks):
        strides = 1
        if stage > 0 and block == 0:
          if self.downsampling == "stride":
            strides = 2
          else:
            x = max_pool(x, (2, 2), (2, 2))
        x = WideBlock(features, strides, self.dropout_rate, norm, self.dtype, self.conv,
                      name=f"stage{stage + 1}_block{block + 1}")(x, train)
    x = nn.relu(norm(name="bn_final")(x))
    x = jnp.mean(x, axis=(1, 2))  # [batch, channels]
    return nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x).astype(jnp.float32)
