"""On-device, per-example data augmentation: random crop, flip, translation and rotation.

Everything is a pure function of a PRNG key and runs inside the jitted train
step. Example `i` of a global batch draws its transform from
`fold_in(key, i)`, so the result does not depend on how the batch is split
across devices.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy import ndimage


def flip_horizontal(image: jax.Array) -> jax.Array:
  """image: [height, width, channels] -> mirrored left-right."""
  return image[:, ::-1, :]


def affine_warp(image: jax.Array, angle: jax.Array, shift: jax.Array) -> jax.Array:
  """Rotates by `angle` radians (counter-clockwise, as `np.rot90`) about the centre,
  then translates by `shift` = (rows, cols) pixels; bilinear, zero fill.

  image: [height, width, channels]. The output at pixel p samples the input at
  R(angle)^T (p - c - shift) + c, with c the image centre.
  """
  height, width, _ = image.shape
  rows, cols = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32),
                            jnp.arange(width, dtype=jnp.float32), indexing="ij")
  u = rows - (height - 1) / 2 - shift[0]
  v = cols - (width - 1) / 2 - shift[1]
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  src_rows = cos * u + sin * v + (height - 1) / 2
  src_cols = -sin * u + cos * v + (width - 1) / 2
  # Snap coordinates within float error of an integer, so exact transforms stay exact.
  snap = lambda c: jnp.where(jnp.abs(c - jnp.round(c)) < 1e-4, jnp.round(c), c)
  coords = [snap(src_rows), snap(src_cols)]
  warp = lambda channel: ndimage.map_coordinates(channel, coords, order=1, mode="constant", cval=0.0)
  return jax.vmap(warp, in_axes=-1, out_axes=-1)(image)


def random_crop(key: jax.Array, image: jax.Array, padding: int, fill: jax.Array | float = 0.0
                ) -> jax.Array:
  """Pads `padding` pixels of `fill` on every side and crops the original size back at a
  uniformly drawn offset in {0, ..., 2 * padding} per axis (the standard CIFAR-10 crop).

  image: [height, width, channels]; fill: a scalar or [channels].
  """
  height, width, channels = image.shape
  padded = jnp.broadcast_to(jnp.asarray(fill, image.dtype),
                            (height + 2 * padding, width + 2 * padding, channels))
  padded = jax.lax.dynamic_update_slice(padded, image, (padding, padding, 0))
  row, col = jax.random.randint(key, (2,), 0, 2 * padding + 1)
  return jax.lax.dynamic_slice(padded, (row, col, 0), (height, width, channels))


def random_transform(key: jax.Array, image: jax.Array, *, flip: bool, max_translate: float,
                     max_rotate: float, crop_padding: int = 0,
                     fill: jax.Array | float = 0.0) -> jax.Array:
  """One example: crop after `crop_padding` pixels of `fill`, flip with p = 0.5,
  shift ~ U(+-max_translate * size), angle ~ U(+-max_rotate deg)."""
  k_flip, k_shift, k_angle = jax.random.split(key, 3)
  if crop_padding:  # its own key, so the other transforms draw what they drew without it
    image = random_crop(jax.random.fold_in(key, 3), image, crop_padding, fill)
  if flip:
    image = jnp.where(jax.random.bernoulli(k_flip), flip_horizontal(image), image)
  if max_translate or max_rotate:
    size = jnp.array(image.shape[:2], jnp.float32)
    shift = jax.random.uniform(k_shift, (2,), minval=-1.0, maxval=1.0) * max_translate * size
    angle = jnp.deg2rad(jax.random.uniform(k_angle, (), minval=-max_rotate, maxval=max_rotate))
    image = affine_warp(image, angle, shift)
  return image


def augment_batch(key: jax.Array, images: jax.Array, *, flip: bool = False,
                  max_translate: float = 0.0, max_rotate: float = 0.0, crop_padding: int = 0,
                  fill: jax.Array | float = 0.0, offset: jax.Array | int = 0) -> jax.Array:
  """images: [batch, height, width, channels] float; example i uses fold_in(key, offset + i).

  `fill` is what crop padding adds (a scalar or [channels]); rotations and translations fill
  with 0. With all ranges zero this is the identity.
  """
  if not (flip or max_translate or max_rotate or crop_padding):
    return images
  index = offset + jnp.arange(images.shape[0])
  keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, index)
  transform = lambda k, x: random_transform(k, x, flip=flip, max_translate=max_translate,
                                            max_rotate=max_rotate, crop_padding=crop_padding,
                                            fill=fill)
  return jax.vmap(transform)(keys, images)
