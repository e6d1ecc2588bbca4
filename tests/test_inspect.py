"""smjax.inspect on checkpoints written by real tiny runs of each mode."""

import json
import re
from pathlib import Path

import jax
import numpy as np
import pytest

from experiments import digits
from smjax import checkpoint, cli, inspect, masking
from smjax.reports import masks

SETS = ["model=lenet300-100", "batch_size=64", "epochs=2", "finetune_epochs=2", "val_size=100",
        "score_init=kaiming_uniform"]


def run_all(workdir, *extra):
  args = ["--workdir", str(workdir), *[a for s in SETS + list(extra) for a in ("--set", s)]]
  assert cli.main(digits.get_config, "digits", args) == 0
  return workdir


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  return {"seed0": run_all(tmp_path_factory.mktemp("seed0")),
          "seed1": run_all(tmp_path_factory.mktemp("seed1"), "seed=1")}


def main_out(capsys, *argv):
  code = inspect.main([str(a) for a in argv])
  out, err = capsys.readouterr()
  return code, out, err


def test_table_matches_masks_from_restored_scores(runs):
  run_dir = runs["seed0"] / "mask"
  table = masks.mask_table(run_dir)
  restored = checkpoint.restore(run_dir)
  # threshold estimator: the evaluation mask is sigmoid(s) > 0.5, i.e. s > 0
  from_scores = jax.tree.map(lambda s: s > 0, restored["state"]["trainable"]["scores"])
  expected = masking.layer_stats(from_scores, restored["meta"]["layers"])
  assert table["layers"] == expected
  assert [row["name"] for row in table["layers"]] == ["dense1/kernel", "dense2/kernel",
                                                      "head/kernel"]
  assert 0.3 < table["masked_fraction"] < 0.7  # kaiming-uniform scores: about half kept


def test_finetune_and_weight_tables(runs):
  ft = checkpoint.restore(runs["seed0"] / "finetune")
  table = masks.mask_table(runs["seed0"] / "finetune")
  assert table["layers"] == masking.layer_stats(
      jax.tree.map(lambda m: m != 0, ft["state"]["masks"]), ft["meta"]["layers"])
  assert masks.mask_table(runs["seed0"] / "weight")["masked_fraction"] == 0.0


def test_text_and_json_output(runs, capsys):
  code, out, _ = main_out(capsys, runs["seed0"])  # a --regime all dir: inspects mask/
  assert code == 0 and "mode mask" in out and "dense1/kernel" in out and "best" in out
  code, out, _ = main_out(capsys, runs["seed0"] / "weight", "--json")
  obj = json.loads(out)
  assert code == 0 and {"step", "masked_fraction", "layers"} <= set(obj)
  assert set(obj["layers"][0]) >= {"name", "shape", "n_weights", "masked_fraction"}


def test_step_selection_and_history(runs, capsys):
  steps = checkpoint.steps(runs["seed0"] / "mask")
  code, out, _ = main_out(capsys, runs["seed0"] / "mask", "--json", "--step", steps[0])
  assert code == 0 and json.loads(out)["step"] == steps[0]
  code, out, _ = main_out(capsys, runs["seed0"] / "mask", "--history", "--json")
  history = json.loads(out)
  assert [h["step"] for h in history] == steps and len(history[0]["layers"]) == 3


def test_export_round_trips(runs, tmp_path, capsys):
  path = tmp_path / "masks.npz"
  code, _, _ = main_out(capsys, runs["seed0"] / "mask", "--export", path, "--scores")
  assert code == 0
  restored = checkpoint.restore(runs["seed0"] / "mask")
  with np.load(path) as saved:
    for name, mask in masking.flatten_masks(restored["masks"]).items():
      np.testing.assert_array_equal(saved[f"masks/{name}"], mask)
    scores = masking.flatten_masks(restored["state"]["trainable"]["scores"])
    np.testing.assert_array_equal(saved["scores/head/kernel"], scores["head/kernel"])


def test_compare_self_and_other_seed(runs, capsys):
  code, out, _ = main_out(capsys, runs["seed0"], "--compare", runs["seed0"], "--json")
  same = json.loads(out)
  assert code == 0 and same["total"]["jaccard"] == 1.0 and same["total"]["hamming"] == 0
  code, out, _ = main_out(capsys, runs["seed0"], "--compare", runs["seed1"], "--json")
  other = json.loads(out)
  assert other["total"]["jaccard"] < 0.9 and other["total"]["hamming"] > 0
  # independent half-dense masks: Jaccard near the chance level 1/3
  assert abs(other["total"]["jaccard"] - other["total"]["chance_jaccard"]) < 0.05


def test_compare_closed_form():
  a = {"l": {"kernel": np.array([1, 1, 0, 0], bool)}}
  b = {"l": {"kernel": np.array([1, 0, 1, 0], bool)}}
  t = masking.compare_masks(a, b)["total"]
  assert (t["jaccard"], t["hamming"], t["agreement"]) == (1 / 3, 2, 0.5)
  assert t["chance_agreement"] == 0.5 and t["chance_jaccard"] == pytest.approx(1 / 3)


def test_errors_are_one_line(runs, tmp_path, capsys):
  code, _, err = main_out(capsys, tmp_path)
  assert code == 2 and "not a run directory" in err and len(err.strip().splitlines()) == 1
  code, _, err = main_out(capsys, runs["seed0"] / "mask", "--step", 99999)
  assert code == 2 and "no checkpoint for step 99999" in err
  import shutil
  broken = tmp_path / "broken"
  shutil.copytree(runs["seed0"] / "mask", broken)
  for f in (broken / "checkpoints").rglob("*"):
    if f.is_file() and "masks" in f.parts and f.stat().st_size > 100:
      f.write_bytes(f.read_bytes()[:10])
  code, _, err = main_out(capsys, broken, "--json")
  assert code == 2 and "unreadable" in err and len(err.strip().splitlines()) == 1


def test_keep_every_epochs_gives_a_full_history(tmp_path, capsys):
  args = ["--workdir", str(tmp_path), "--regime", "mask",
          *[a for s in SETS + ["epochs=4", "keep_every_epochs=1"] for a in ("--set", s)]]
  assert cli.main(digits.get_config, "digits", args) == 0
  capsys.readouterr()
  code, out, _ = main_out(capsys, tmp_path, "--history")
  assert code == 0 and out.count("step ") == 4 and "dense2/kernel" in out


@pytest.mark.parametrize("regime", ["mask", "finetune"])
def test_exported_model_needs_no_smjax_and_scores_what_the_run_recorded(runs, tmp_path, capsys,
                                                                         regime):
  from flax import serialization
  from smjax import data, models
  from smjax.workdir import read_metrics
  path = tmp_path / "net.msgpack"
  code, out, _ = main_out(capsys, runs["seed0"] / regime, "--export-model", path)
  assert code == 0 and "kept" in out
  info = json.loads(path.with_name("net.msgpack.json").read_text())
  variables = serialization.msgpack_restore(path.read_bytes())
  best = {m["step"]: m for m in read_metrics(runs["seed0"] / regime)}[info["step"]]
  test = data.load("digits", val_size=100).test
  x = ((test.images.astype(np.float32) / info["input"]["scale"] - np.asarray(info["input"]["mean"]))
       / np.asarray(info["input"]["std"]))
  logits = models.get(info["model"], 10).apply(variables, x.astype(np.float32), train=False)
  assert np.mean(np.argmax(logits, -1) == test.labels) == pytest.approx(best["test_accuracy"], abs=1e-6)
  zeros = sum(int(np.sum(variables["params"][name.split("/")[0]]["kernel"] == 0))
              for name in (layer["name"] for layer in info["layers"]))
  total = sum(layer["n_weights"] for layer in info["layers"])
  assert 1 - zeros / total == pytest.approx(info["density"], abs=1e-9) and info["density"] < 1


# The README's lines that load the digits test split and run the exported network with jax,
# numpy and scikit-learn alone; then a check that neither smjax nor flax was imported.
README = (Path(__file__).parents[1] / "README.md").read_text()
NO_SMJAX = next(b for b in re.findall(r"```python\n(.*?)```", README, re.S)
                if "jax.export.deserialize" in b) + (
    "import sys\nassert 'smjax' not in sys.modules and 'flax' not in sys.modules\n")
EXPORTED = "runs/digits/finetune/export/model.msgpack.stablehlo"


@pytest.mark.parametrize("regime", ["mask", "finetune"])
def test_exported_function_runs_with_jax_alone_and_scores_the_recorded_accuracy(runs, tmp_path,
                                                                                capsys, regime):
  import os
  import subprocess
  import sys
  from smjax.workdir import read_metrics
  path = tmp_path / "net.msgpack"
  assert main_out(capsys, runs["seed0"] / regime, "--export-model", path)[0] == 0
  info = json.loads(path.with_name("net.msgpack.json").read_text())
  recorded = {m["step"]: m for m in read_metrics(runs["seed0"] / regime)}[info["step"]]
  assert info["test_accuracy"] == recorded["test_accuracy"]
  assert info["input"]["dtype"] == "uint8" and info["input"]["shape"] == [8, 8, 1]
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "PYTHONPATH")}
  assert EXPORTED in NO_SMJAX
  script = NO_SMJAX.replace(EXPORTED, f"{path}.stablehlo")
  done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path,
                        env={**env, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True)
  assert done.returncode == 0, done.stderr[-2000:]
  accuracy = float(re.search(r"test accuracy ([0-9.]+)", done.stdout)[1])
  assert accuracy == recorded["test_accuracy"]
