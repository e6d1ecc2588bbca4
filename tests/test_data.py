import numpy as np
import pytest
import tensorflow_datasets as tfds

from smjax import data


@pytest.fixture(scope="module")
def digits():
  return data.load("digits")


def test_digits_is_real_and_split_disjointly(digits):
  assert len(digits.train) + len(digits.val) + len(digits.test) == 1797
  assert len(digits.test) == data.DIGITS_TEST_SIZE and len(digits.val) == 144
  assert digits.input_shape == (8, 8, 1) and digits.train.images.dtype == np.uint8
  rows = lambda s: {im.tobytes() + bytes([lab]) for im, lab in zip(s.images, s.labels)}
  # sklearn's digits hold a few exact duplicates; disjointness is by index, so compare counts
  assert len(rows(digits.train) & rows(digits.test)) < 5
  for split in (digits.train, digits.val, digits.test):
    assert set(np.unique(split.labels)) == set(range(10))  # stratified


def test_digits_split_is_fixed():
  a, b = data.load("digits"), data.load("digits")
  np.testing.assert_array_equal(a.val.labels, b.val.labels)
  np.testing.assert_array_equal(a.test.images, b.test.images)
  assert data.load("digits", val_size=0).val is None
  assert len(data.load("digits", val_size=100).val) == 100


@pytest.mark.parametrize("name,shape", [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_tfds_loaders_on_mock_data(tmp_path, name, shape):
  with tfds.testing.mock_data(num_examples=60):
    ds = data.load(name, data_dir=str(tmp_path), val_size=10)
  assert ds.input_shape == shape and ds.num_classes == 10
  assert len(ds.train) == 50 and len(ds.val) == 10 and len(ds.test) == 60
  for split in (ds.train, ds.val, ds.test):
    assert split.images.dtype == np.uint8 and split.labels.dtype == np.int32
    assert split.labels.min() >= 0 and split.labels.max() < 10


def test_unprepared_dataset_names_tfds_data_dir(tmp_path):
  with pytest.raises(data.DataError, match="TFDS_DATA_DIR"):
    data.load("mnist", data_dir=str(tmp_path))


def test_unknown_dataset_lists_known():
  with pytest.raises(ValueError, match="digits, mnist, cifar10"):
    data.load("imagenet")


def test_training_order_is_a_function_of_seed_and_epoch(digits):
  labels = lambda seed, epoch: np.concatenate(
      [b["label"].ravel() for b in data.train_batches(digits.train, 64, seed=seed, epoch=epoch)])
  np.testing.assert_array_equal(labels(0, 1), labels(0, 1))
  assert not np.array_equal(labels(0, 1), labels(0, 2))
  assert len(labels(0, 1)) == (len(digits.train) // 64) * 64  # remainder dropped


@pytest.mark.parametrize("batch_size", [100, 120, 1000])  # 360 test examples
def test_evaluation_counts_every_example_once(digits, batch_size):
  seen = []
  for batch in data.eval_batches(digits.test, batch_size, num_devices=4):
    assert batch["image"].shape[:2] == batch["weight"].shape and batch["image"].shape[0] == 4
    seen.append(batch["label"].ravel()[batch["weight"].ravel() == 1])
  np.testing.assert_array_equal(np.concatenate(seen), digits.test.labels)


def test_device_and_process_shards_are_disjoint_and_cover_the_batch(digits):
  full = next(data.train_batches(digits.train, 64, seed=0, epoch=1, num_devices=4))
  assert full["image"].shape == (4, 16, 8, 8, 1)
  shards = [next(data.train_batches(digits.train, 64, seed=0, epoch=1, num_devices=2,
                                    process_index=p, process_count=2)) for p in range(2)]
  images = lambda b: {im.tobytes() for im in b["image"].reshape(-1, 8, 8, 1)}
  assert images(shards[0]).isdisjoint(images(shards[1]))
  assert images(shards[0]) | images(shards[1]) == images(full)
  # every example sits on the same global device, at the same place, whatever the process count
  # (its augmentation is keyed by that place)
  for key in ("image", "label"):
    np.testing.assert_array_equal(np.concatenate([s[key] for s in shards]), full[key])


def test_batch_that_does_not_split_is_refused():
  with pytest.raises(ValueError, match="does not split across 4 devices"):
    data.check_batch_size(30, 4)
