"""The original distribution files: exact round trips, verification, one-line errors, real counts."""

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest

from smjax import data, dataset_files

ROOT = Path(__file__).parents[1]
SHARED = ROOT.parent / "shared" / "data"
RNG = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
  monkeypatch.setenv("SMJAX_CACHE_DIR", str(tmp_path / "cache"))
  monkeypatch.delenv("SMJAX_DATA_DIR", raising=False)


def idx_bytes(array: np.ndarray) -> bytes:
  header = bytes([0, 0, 8, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
  return header + array.astype(np.uint8).tobytes()


def write_tiny(root: Path, monkeypatch, name: str, gz: bool = True) -> dict:
  """Tiny files in the dataset's original format; their sizes and md5s become the known ones."""
  checksums, arrays = {}, {}
  if name == "mnist":
    folder = root / "mnist"
    for split, n in (("train", 12), ("t10k", 5)):
      images, labels = RNG.integers(0, 256, (n, 28, 28)), RNG.integers(0, 10, n)
      arrays[split] = (images[..., None], labels)
      for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
        raw = idx_bytes(array)
        checksums[f"{split}-{kind}-ubyte" + (".gz" if gz else "")] = gzip.compress(raw) if gz else raw
  else:
    folder = root / "cifar10" / "cifar-10-batches-bin"
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    for file in names:
      images, labels = RNG.integers(0, 256, (20, 32, 32, 3)), RNG.permutation(20) % 10
      arrays[file] = (images, labels)
      planes = images.transpose(0, 3, 1, 2).reshape(20, -1)  # R, G, B planes, row-major
      checksums[file] = np.concatenate([labels[:, None], planes], 1).astype(np.uint8).tobytes()
  folder.mkdir(parents=True)
  for file, raw in checksums.items():
    (folder / file).write_bytes(raw)
  monkeypatch.setitem(dataset_files.CHECKSUMS, name, {
      file: (len(raw), hashlib.md5(raw).hexdigest()) for file, raw in checksums.items()})
  return {"folder": folder, "arrays": arrays}


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx_files_read_back_exactly(tmp_path, monkeypatch, gz):
  tiny = write_tiny(tmp_path, monkeypatch, "mnist", gz)
  ds = data.load("mnist", data_dir=str(tmp_path), val_size=0)
  for split, key in ((ds.train, "train"), (ds.test, "t10k")):
    images, labels = tiny["arrays"][key]
    np.testing.assert_array_equal(split.images, images.astype(np.uint8))
    np.testing.assert_array_equal(split.labels, labels)
    assert split.images.dtype == np.uint8 and split.labels.dtype == np.int32


def test_cifar_binary_files_read_back_exactly(tmp_path, monkeypatch):
  tiny = write_tiny(tmp_path, monkeypatch, "cifar10")
  ds = data.load("cifar10", data_dir=str(tmp_path), val_size=0)
  arrays = tiny["arrays"]
  train = [arrays[f"data_batch_{i}.bin"] for i in range(1, 6)]
  np.testing.assert_array_equal(ds.train.images, np.concatenate([a[0] for a in train]))
  np.testing.assert_array_equal(ds.train.labels, np.concatenate([a[1] for a in train]))
  np.testing.assert_array_equal(ds.test.images, arrays["test_batch.bin"][0])
  assert ds.input_shape == (32, 32, 3)


def test_files_directly_in_the_folder_and_the_environment_variable(tmp_path, monkeypatch):
  tiny = write_tiny(tmp_path, monkeypatch, "mnist")
  monkeypatch.setenv("SMJAX_DATA_DIR", str(tiny["folder"]))
  assert len(data.load("mnist", val_size=0).train) == 12


def test_verification_is_remembered_and_redone_when_the_file_changes(tmp_path, monkeypatch):
  tiny = write_tiny(tmp_path, monkeypatch, "mnist")
  data.load("mnist", data_dir=str(tmp_path), val_size=0)
  assert len(dataset_files._read_cache()) == 4
  calls = []
  real_md5 = hashlib.md5
  monkeypatch.setattr(dataset_files.hashlib, "md5", lambda b: calls.append(1) or real_md5(b))
  data.load("mnist", data_dir=str(tmp_path), val_size=0)
  assert not calls  # verified files are only read
  path = tiny["folder"] / "t10k-labels-idx1-ubyte.gz"
  raw = bytearray(path.read_bytes())
  raw[-1] ^= 1  # same size, another content, another mtime
  path.write_bytes(bytes(raw))
  with pytest.raises(data.DataError, match="expected md5"):
    data.load("mnist", data_dir=str(tmp_path), val_size=0)


def test_validation_comes_from_the_training_files_only(tmp_path, monkeypatch):
  write_tiny(tmp_path, monkeypatch, "cifar10")
  full = data.load("cifar10", data_dir=str(tmp_path), val_size=0)
  ds = data.load("cifar10", data_dir=str(tmp_path), val_size=10)
  assert len(ds.train) + len(ds.val) == len(full.train) == 100 and len(ds.test) == 20
  rows = lambda s: {im.tobytes() for im in s.images}
  assert rows(ds.val) <= rows(full.train) and rows(ds.val).isdisjoint(rows(ds.train))
  np.testing.assert_array_equal(ds.test.images, full.test.images)


@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_damaged_file_is_one_error_line_exit_2_nothing_written(tmp_path, monkeypatch, capsys, damage):
  from experiments import zhou
  from smjax import cli
  tiny = write_tiny(tmp_path / "data", monkeypatch, "mnist")
  bad = tiny["folder"] / "t10k-labels-idx1-ubyte.gz"
  raw = bad.read_bytes()
  bad.write_bytes(raw[:-5] if damage == "truncated" else raw[:-1] + bytes([raw[-1] ^ 1]))
  capsys.readouterr()
  code = cli.main(zhou.get_config, "zhou", ["--workdir", str(tmp_path / "run"), "--regime", "weight",
                                             "--set", f"data_dir={tmp_path / 'data'}"])
  lines = capsys.readouterr().err.strip().splitlines()
  assert code == 2 and len(lines) == 1, lines
  assert lines[0].startswith("error: ") and str(bad) in lines[0]
  expected = f"expected {len(raw)} bytes" if damage == "truncated" else "expected md5"
  assert expected in lines[0] and "found" in lines[0]
  assert not (tmp_path / "run").exists() and not dataset_files._read_cache().get(str(bad))


def test_missing_dataset_names_both_ways(tmp_path):
  with pytest.raises(data.DataError, match="SMJAX_DATA_DIR.*TFDS_DATA_DIR"):
    data.load("cifar10", data_dir=str(tmp_path))


def test_a_folder_with_some_of_the_files_names_the_missing_ones(tmp_path, monkeypatch):
  tiny = write_tiny(tmp_path, monkeypatch, "cifar10")
  (tiny["folder"] / "data_batch_3.bin").unlink()
  with pytest.raises(data.DataError, match="not data_batch_3.bin"):
    data.load("cifar10", data_dir=str(tmp_path))


needs_shared = pytest.mark.skipif(not SHARED.exists(), reason="../shared/data is not here")


@needs_shared
def test_real_mnist_counts():
  ds = data.load("mnist", data_dir=str(SHARED), val_size=0)
  assert ds.train.images.shape == (60000, 28, 28, 1) and ds.test.images.shape == (10000, 28, 28, 1)
  np.testing.assert_array_equal(np.bincount(ds.train.labels),
                                [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])
  np.testing.assert_array_equal(np.bincount(ds.test.labels),
                                [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])
  held_out = data.load("mnist", data_dir=str(SHARED))
  assert (len(held_out.train), len(held_out.val), len(held_out.test)) == (55000, 5000, 10000)


@needs_shared
def test_real_cifar10_counts():
  ds = data.load("cifar10", data_dir=str(SHARED), val_size=0)
  assert ds.train.images.shape == (50000, 32, 32, 3) and ds.test.images.shape == (10000, 32, 32, 3)
  np.testing.assert_array_equal(np.bincount(ds.train.labels), [5000] * 10)
  np.testing.assert_array_equal(np.bincount(ds.test.labels), [1000] * 10)
  assert ds.test.labels[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]  # cat, ship, ship, ...
