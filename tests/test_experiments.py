"""One smoke run per experiment module, with tiny sizes, on tfds mock data."""

import importlib

import pytest
import tensorflow_datasets as tfds

from smjax import cli, run

TINY = ["epochs=1", "finetune_epochs=1", "batch_size=16", "val_size=16", "eval_batch_size=64"]
CASES = {
    "mnist_wrn28": ["model=lenet5", "flip=false"],  # its protocol on the CPU-sized net
    "cifar10_wrn28": ["model=wrn10-1", "protocol=original"],
    "zhou": ["model=conv2", "sampled_mask_evals=3"],
}


@pytest.mark.parametrize("name", CASES)
def test_experiment_runs_all_regimes(tmp_path, name):
  module = importlib.import_module(f"experiments.{name}")
  assert module.__doc__.lstrip().splitlines()[0]
  sets = [a for s in TINY + CASES[name] for a in ("--set", s)]
  with tfds.testing.mock_data(num_examples=48):
    code = cli.main(module.get_config, name, ["--workdir", str(tmp_path), *sets])
  assert code == 0
  assert (tmp_path / "report" / "summary.md").exists()
  assert [m["epoch"] for m in run.read_metrics(tmp_path / "finetune")] == [1]
  if name == "zhou":  # bernoulli masks: sampled-mask test accuracy beside the deterministic one
    line = run.read_metrics(tmp_path / "mask")[0]
    assert 0 <= line["test_accuracy_sampled_mean"] <= 1 and line["test_accuracy_sampled_std"] >= 0


def test_protocols_switch_the_whole_setup():
  from experiments import cifar10_wrn28, zhou
  clean = cli.build_config(cifar10_wrn28.get_config, [])
  original = cli.build_config(cifar10_wrn28.get_config, ["protocol=original", "epochs=3"])
  assert clean.best_metric == "val_accuracy" and not clean.train_bn_with_mask
  assert clean.model == "wrn28-8" and clean.batch_size == 128 and clean.lr == 0.01
  assert clean.finetune_lr == 1e-5 and clean.epochs == 30 and clean.flip
  assert original.best_metric == "test_accuracy" and original.train_bn_with_mask
  assert (original.optimizer, original.score_optimizer, original.schedule) == ("adam", "adam",
                                                                                "plateau")
  assert original.downsampling == "maxpool" and original.mask_biases and original.epochs == 3
  assert original.max_rotate == 20 and original.max_translate == 0.2
  assert cli.build_config(zhou.get_config, ["model=conv6"]).dataset == "cifar10"


def test_help_shows_the_config_as_the_command_runs_it(capsys):
  from experiments import zhou
  with pytest.raises(SystemExit):
    cli.parse_args("zhou", ["--set", "model=conv2", "--help"], get_config=zhou.get_config)
  out = capsys.readouterr().out
  assert "dataset = 'cifar10'" in out and "model = 'conv2'" in out and "crop_padding = 4" in out
  with pytest.raises(SystemExit):
    cli.parse_args("zhou", ["--help"], get_config=zhou.get_config)
  assert "dataset = 'mnist'" in capsys.readouterr().out


@pytest.mark.parametrize("argv, expected", [
    ([], "runs/x"), (["--seeds", "0", "1"], "runs/x_seeds"), (["--regime", "tickets"], "runs/x_tickets"),
    (["--regime", "mask"], "runs/x/mask"), (["--seeds", "0", "--workdir", "w"], "w")])
def test_a_study_a_single_run_and_tickets_never_share_a_default_workdir(argv, expected):
  assert str(cli.default_workdir("x", cli.parse_args("x", argv))) == expected
