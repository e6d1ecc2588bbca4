import jax
import jax.numpy as jnp
import numpy as np
import pytest

from smjax import augment

IMAGES = jax.random.uniform(jax.random.key(0), (6, 9, 9, 3))


def test_flip_is_exact():
  np.testing.assert_array_equal(augment.flip_horizontal(IMAGES[0]), np.asarray(IMAGES[0])[:, ::-1])


@pytest.mark.parametrize("quarter_turns", [1, 2, 3])
def test_rotation_by_multiples_of_90_matches_rot90(quarter_turns):
  out = augment.affine_warp(IMAGES[0], jnp.deg2rad(90.0 * quarter_turns), jnp.zeros(2))
  np.testing.assert_allclose(out, np.rot90(np.asarray(IMAGES[0]), quarter_turns), atol=1e-6)


@pytest.mark.parametrize("shift", [(2, 0), (0, -3), (1, 2)])
def test_integer_translation_is_a_zero_filled_shift(shift):
  out = augment.affine_warp(IMAGES[0], jnp.float32(0), jnp.array(shift, jnp.float32))
  expected = np.zeros_like(np.asarray(IMAGES[0]))
  dy, dx = shift
  src = np.asarray(IMAGES[0])
  expected[max(dy, 0):9 + min(dy, 0), max(dx, 0):9 + min(dx, 0)] = \
      src[max(-dy, 0):9 - max(dy, 0), max(-dx, 0):9 - max(dx, 0)]
  np.testing.assert_allclose(out, expected, atol=1e-6)


def test_zero_ranges_are_identity():
  assert augment.augment_batch(jax.random.key(1), IMAGES) is IMAGES
  out = augment.random_transform(jax.random.key(1), IMAGES[0], flip=False, max_translate=0.0,
                                 max_rotate=0.0)
  np.testing.assert_array_equal(out, IMAGES[0])


def test_keys_decide_the_output():
  fn = jax.jit(lambda k, x: augment.augment_batch(k, x, flip=True, max_translate=0.2, max_rotate=20))
  a, b = fn(jax.random.key(1), IMAGES), fn(jax.random.key(1), IMAGES)
  c = fn(jax.random.key(2), IMAGES)
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)
  # examples get different transforms within a batch
  same = jnp.broadcast_to(IMAGES[:1], IMAGES.shape)
  out = fn(jax.random.key(1), same)
  assert not np.allclose(out[0], out[1])


def test_offset_makes_shards_agree_with_the_global_batch():
  kw = dict(flip=True, max_translate=0.2, max_rotate=20)
  whole = augment.augment_batch(jax.random.key(3), IMAGES, **kw)
  second = augment.augment_batch(jax.random.key(3), IMAGES[3:], offset=3, **kw)
  np.testing.assert_array_equal(whole[3:], second)


@pytest.mark.parametrize("padding", [1, 4])
def test_random_crop_is_a_window_of_the_padded_image(padding):
  image = np.asarray(IMAGES[0])
  fill = np.array([-1.0, -2.0, -3.0], np.float32)
  padded = np.tile(fill, (9 + 2 * padding, 9 + 2 * padding, 1))
  padded[padding:padding + 9, padding:padding + 9] = image
  windows = {(r, c): padded[r:r + 9, c:c + 9] for r in range(2 * padding + 1)
             for c in range(2 * padding + 1)}
  crop = jax.jit(augment.random_crop, static_argnums=2)
  seen = set()
  for i in range(60):
    out = np.asarray(crop(jax.random.key(i), IMAGES[0], padding, fill))
    match = [offset for offset, window in windows.items() if np.array_equal(out, window)]
    assert len(match) == 1
    seen.add(match[0])
  assert len(seen) > (2 * padding + 1) ** 2 // 2  # the offsets are drawn, not fixed
  assert (padding, padding) in windows and np.array_equal(windows[padding, padding], image)


def test_crop_leaves_the_other_transforms_draws_unchanged():
  kw = dict(flip=True, max_translate=0.0, max_rotate=0.0)
  plain = augment.augment_batch(jax.random.key(4), IMAGES, **kw)
  cropped = augment.augment_batch(jax.random.key(4), IMAGES, crop_padding=4, **kw)
  flipped = [not np.array_equal(p, x) for p, x in zip(np.asarray(plain), np.asarray(IMAGES))]
  # the crop moves content but a flip still mirrors exactly the examples it mirrored before
  for out, was_flipped, image in zip(np.asarray(cropped), flipped, np.asarray(IMAGES)):
    unflipped = out[:, ::-1] if was_flipped else out
    windows = np.pad(image, ((4, 4), (4, 4), (0, 0)))
    assert any(np.array_equal(unflipped, windows[r:r + 9, c:c + 9])
               for r in range(9) for c in range(9))
