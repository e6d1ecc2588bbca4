"""examples/custom_model.py, a model, dataset and mask rule of a user's own, through every command."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from examples import custom_model
from smjax import checkpoint, cli, data, inspect, masking, models, report, run

ROOT = Path(__file__).resolve().parent.parent
SETS = ["epochs=4", "finetune_epochs=3", "mask_layers=middle_only", "finetune_controls=random"]
REGIMES = ("mask", "weight", "finetune", "finetune_random")


def args(workdir, *extra):
  return ["--workdir", str(workdir), *[a for s in SETS for a in ("--set", s)], *extra]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
  """`--seeds 0 1 --jobs 2` in a subprocess, stopped by SIGTERM after the first epoch line,
  then the same command again to the end."""
  workdir = tmp_path_factory.mktemp("custom") / "study"
  command = [sys.executable, "-m", "examples.custom_model", *args(workdir, "--seeds", "0", "1",
                                                                  "--jobs", "2")]
  env = {**os.environ, "PYTHONPATH": str(ROOT)}
  proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  deadline = time.monotonic() + 300
  while not run.read_metrics(workdir / "seed0" / "mask"):
    assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0 and "rerun the same command to resume" in err, err
  assert not (workdir / "report").exists()  # stopped before the end
  done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  return workdir


def test_the_study_resumes_to_the_uninterrupted_result(study, tmp_path):
  for seed in (0, 1):
    for regime in REGIMES:
      lines = run.read_metrics(study / f"seed{seed}" / regime)
      assert len(lines) == (4 if regime in ("mask", "weight") else 3)
  result = json.loads((study / "report" / "study.json").read_text())
  assert result["seeds"] == [0, 1] and result["contrasts"]["C3"]["best"]["n"] == 2
  # the interrupted mask run of seed 0 equals one trained in one go, in this process
  alone = tmp_path / "mask"
  assert cli.main(custom_model.get_config, "custom_model", args(alone, "--regime", "mask")) == 0
  strip = lambda lines: [{k: v for k, v in m.items() if k not in ("seconds", "images_per_second")}
                         for m in lines]
  assert strip(run.read_metrics(alone)) == strip(run.read_metrics(study / "seed0" / "mask"))


def test_the_mask_rule_of_the_module_masks_only_what_it_names(study):
  best = checkpoint.restore(study / "seed0" / "mask", which="best")
  assert list(masking.flatten_masks(best["masks"])) == ["middle/kernel"]
  assert 0 < masking.layer_stats(best["masks"])[0]["masked_fraction"] < 1


def test_report_and_inspect_read_it_and_the_export_runs_with_jax_alone(study, tmp_path, capsys):
  (study / "report" / "study.json").unlink()
  assert report.main([str(study)]) == 0
  assert (study / "report" / "study.json").exists()
  assert inspect.main([str(study / "seed0" / "finetune")]) == 0
  assert "middle/kernel" in capsys.readouterr().out
  run_dir = study / "seed0" / "finetune"
  assert inspect.main([str(run_dir), "--import", "examples.custom_model", "--export-model"]) == 0
  exported = run_dir / "export" / "model.msgpack"
  info = json.loads(exported.with_name("model.msgpack.json").read_text())
  assert info["input"]["dtype"] == "float32" and info["input"]["shape"] == [1, 1, 16]
  *_, images, labels = custom_model.load_blobs("")
  np.save(tmp_path / "images.npy", images)
  np.save(tmp_path / "labels.npy", labels)
  script = ("import json, sys, jax, numpy as np\n"
            "net = jax.export.deserialize(open(sys.argv[1], 'rb').read())\n"
            "logits = np.asarray(net.call(np.load('images.npy')))\n"
            "assert 'smjax' not in sys.modules and 'flax' not in sys.modules\n"
            "print(json.dumps(float(np.mean(np.argmax(logits, -1) == np.load('labels.npy')))))")
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "PYTHONPATH")}
  done = subprocess.run([sys.executable, "-c", script, f"{exported}.stablehlo"], cwd=tmp_path,
                        env={**env, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True)
  assert done.returncode == 0, done.stderr[-2000:]
  assert json.loads(done.stdout) == info["test_accuracy"]


def test_ticket_rounds_run_on_it(tmp_path):
  code = cli.main(custom_model.get_config, "custom_model",
                  args(tmp_path, "--regime", "tickets", "--set", "ticket_rounds=1",
                       "--set", "mask_layers=all"))
  assert code == 0
  assert len(run.read_metrics(tmp_path / "seed0" / "round1")) == 4


def test_registration_refuses_built_in_names_and_names_the_known_ones():
  with pytest.raises(ValueError, match="built-in"):
    models.register("conv2", custom_model.TwoHiddenLayers)
  with pytest.raises(ValueError, match="built-in"):
    data.register("mnist", custom_model.load_blobs)
  with pytest.raises(ValueError, match="built-in"):
    masking.register_mask_rule("all", lambda path, leaf, layers: True)
  with pytest.raises(ValueError, match="two_hidden"):
    models.get("nope", 10)
  with pytest.raises(ValueError, match="blobs"):
    data.load("nope")


def test_a_bad_loader_is_one_clear_error():
  data.register("bad_labels", lambda data_dir: (np.zeros((4, 2, 2)), np.array([0, 1, 2, -1]),
                                                np.zeros((2, 2, 2)), np.array([0, 1])))
  with pytest.raises(data.DataError, match="labels must be integers"):
    data.load("bad_labels", val_size=0)
  data.register("bad_shape", lambda data_dir: (np.zeros((4,)), np.zeros(4, int),
                                               np.zeros((2, 2, 2)), np.zeros(2, int)))
  with pytest.raises(data.DataError, match=r"images \[n, height, width"):
    data.load("bad_shape", val_size=0)
