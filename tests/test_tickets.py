"""Iterative magnitude pruning: the pruning rule by hand, and ticket rounds end to end."""

import subprocess
import sys
import time
from pathlib import Path

import chex
import jax
import numpy as np
import pytest

from experiments import digits
from smjax import checkpoint, cli, data, models, run, tickets, train
from smjax.config import Config


def test_each_layer_keeps_its_largest_survivors():
  params = {"a": {"kernel": np.array([0.1, -0.5, 0.3, 0.05, -0.9])},
            "head": {"kernel": np.array([[1.0, -2.0], [0.5, 0.0]])}}
  masks = {"a": {"kernel": np.array([1, 1, 1, 1, 0])}, "head": {"kernel": np.ones((2, 2))}}
  out = tickets.magnitude_masks(params, masks, {"a/kernel": 0.5, "head/kernel": 0.25})
  # a: 4 survivors (the pruned -0.9 stays pruned), 2 pruned: 0.05 and 0.1 go
  np.testing.assert_array_equal(out["a"]["kernel"], [0, 1, 1, 0, 0])
  np.testing.assert_array_equal(out["head"]["kernel"], [[1, 1], [1, 0]])  # round(0.25 * 4) = 1


def test_global_scope_ranks_all_layers_together_and_ties_keep_the_earlier():
  params = {"a": {"kernel": np.array([0.1, 0.2, 0.2])}, "b": {"kernel": np.array([0.15, 0.3])}}
  ones = {"a": {"kernel": np.ones(3)}, "b": {"kernel": np.ones(2)}}
  out = tickets.magnitude_masks(params, ones, {"a/kernel": 0.6, "b/kernel": 0.6}, "global")
  # 5 survivors, 3 pruned: 0.1, 0.15 and the later of the two 0.2
  np.testing.assert_array_equal(out["a"]["kernel"], [0, 1, 0])
  np.testing.assert_array_equal(out["b"]["kernel"], [0, 1])


def test_rounds_reach_the_compounded_densities():
  rng = np.random.default_rng(0)
  params = {"h": {"kernel": rng.normal(size=(50, 20))}, "head": {"kernel": rng.normal(size=(20, 10))}}
  masks = {"h": {"kernel": np.ones((50, 20))}, "head": {"kernel": np.ones((20, 10))}}
  for _ in range(5):
    masks = tickets.magnitude_masks(params, masks, {"h/kernel": 0.2, "head/kernel": 0.1})
  assert masks["h"]["kernel"].sum() == 328  # 1000 -> 800 -> 640 -> 512 -> 410 -> 328
  assert masks["head"]["kernel"].sum() == 118  # 200 -> 180 -> 162 -> 146 -> 131 -> 118


def test_random_masks_keep_each_layers_count_at_seeded_nested_places():
  rng = np.random.default_rng(1)
  ticket = {"h": {"kernel": (rng.random((40, 30)) < 0.3).astype(np.float32)},
            "head": {"kernel": (rng.random((30, 10)) < 0.7).astype(np.float32)}}
  a, b = tickets.random_masks(ticket, 5), tickets.random_masks(ticket, 6)
  for layer in ("h", "head"):
    assert a[layer]["kernel"].sum() == ticket[layer]["kernel"].sum()
    assert a[layer]["kernel"].shape == ticket[layer]["kernel"].shape
    assert not np.array_equal(a[layer]["kernel"], b[layer]["kernel"])
    assert not np.array_equal(a[layer]["kernel"], ticket[layer]["kernel"])
  np.testing.assert_array_equal(a["h"]["kernel"], tickets.random_masks(ticket, 5)["h"]["kernel"])
  sparser = tickets.magnitude_masks(ticket, ticket, {"h/kernel": 0.5, "head/kernel": 0.5})
  smaller = tickets.random_masks(sparser, 5)  # one seed: the sparser random mask lies inside
  assert np.all(smaller["h"]["kernel"] <= a["h"]["kernel"])


SETS = ["model=lenet300-100", "batch_size=64", "epochs=2", "val_size=100", "ticket_rounds=2"]
TICKET_ARGS = ["--regime", "tickets", "--seeds", "0", *[a for s in SETS for a in ("--set", s)]]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
  """Two rounds of tickets with both controls on digits, uninterrupted."""
  workdir = tmp_path_factory.mktemp("tickets")
  assert cli.main(digits.get_config, "digits", ["--workdir", str(workdir), *TICKET_ARGS]) == 0
  return workdir


@pytest.mark.slow
def test_ticket_rounds_end_to_end_rewind_controls_resume_and_report(study, capsys, monkeypatch):
  tmp_path = study
  args = ["--workdir", str(tmp_path), *TICKET_ARGS]
  seed = tmp_path / "seed0"
  assert sorted(p.name for p in seed.iterdir()) == [
      "round0", "round1", "round1_random", "round1_reinit", "round2", "round2_random", "round2_reinit"]
  config = Config(model="lenet300-100", dataset="digits")
  model = models.get("lenet300-100", 10)
  init = lambda s: train.init_variables(jax.random.key(s), model, (8, 8, 1), config)[0]
  for r in (1, 2):
    source = checkpoint.restore(seed / f"round{r - 1}", which="best")
    expected = tickets.magnitude_masks(source["state"]["trainable"]["params"], source["masks"],
                                       {"dense1/kernel": 0.2, "dense2/kernel": 0.2, "head/kernel": 0.1})
    random = tickets.random_masks(expected, tickets.RANDOM_MASK_SEED_OFFSET)
    for name, init_seed, masks in ((f"round{r}", 0, expected),
                                   (f"round{r}_reinit", tickets.REINIT_SEED_OFFSET, expected),
                                   (f"round{r}_random", 0, random)):
      last = checkpoint.restore(seed / name, which="latest")
      chex.assert_trees_all_equal(last["masks"], jax.tree.map(np.asarray, masks))
      # pruned weights never train: they still hold the init the round was rewound to
      for layer in ("dense1", "dense2", "head"):
        pruned = last["masks"][layer]["kernel"] == 0
        kernel = last["state"]["trainable"]["params"][layer]["kernel"]
        np.testing.assert_array_equal(kernel[pruned], np.asarray(init(init_seed)[layer]["kernel"])[pruned])
  # rewound to the init: round 2 starts from seed 0's initial weights, every one of them
  config = cli.build_config(digits.get_config, SETS)
  dataset = data.load("digits", val_size=100)
  start = run.initial_state(tickets.round_configs(config, seed)["round2"], model, dataset, steps=10)
  chex.assert_trees_all_equal(start.trainable["params"], init(0))
  assert checkpoint.restore(seed / "round2")["masks"]["dense1"]["kernel"].mean() == pytest.approx(0.64, abs=1e-4)
  summary = (tmp_path / "report" / "summary.md").read_text()
  assert "| 2 | 64.34 | " in summary  # (0.64 * 49,200 + 0.81 * 1,000) / 50,200
  assert "random mask, same layer densities: test acc (%)" in summary
  assert (tmp_path / "report" / "tickets.png").stat().st_size > 0
  capsys.readouterr()
  monkeypatch.setattr(run.data, "load", lambda *a, **k: pytest.fail("finished rounds reloaded data"))
  assert cli.main(digits.get_config, "digits", args) == 0
  assert capsys.readouterr().out.count("finished (") == 7
  monkeypatch.undo()
  # a top-k supermask of the same init beside them, matched to the nearest ticket
  supermask = tmp_path.parent / f"{tmp_path.name}_supermask"
  sets = SETS[:-1] + ["finetune_epochs=2", "estimator=topk", "topk_fraction=0.64",
                      "score_init=kaiming_uniform"]
  assert cli.main(digits.get_config, "digits", ["--workdir", str(supermask), "--seeds", "0",
                                                *[a for s in sets for a in ("--set", s)]]) == 0
  from smjax import masking, report
  capsys.readouterr()
  assert report.main([str(tmp_path), "--supermasks", str(supermask)]) == 0
  import json
  (row,) = json.loads((tmp_path / "report" / "tickets.json").read_text())["supermasks"]
  assert row["ticket_round"] == "round2" and row["kept"] == pytest.approx(0.64, abs=1e-3)
  expected = masking.compare_masks(checkpoint.restore(seed / "round2")["masks"],
                                   checkpoint.restore(supermask / "seed0" / "mask")["masks"])
  assert row["overlap"]["total"] == pytest.approx(expected["total"])
  assert "## Supermasks of the same init at matched density" in \
      (tmp_path / "report" / "summary.md").read_text()


@pytest.mark.slow
def test_late_rewinding_starts_every_round_from_round0_after_epoch_k(tmp_path):
  sets = ["model=lenet300-100", "batch_size=64", "epochs=2", "val_size=100", "ticket_rounds=1",
          "rewind_epoch=1", "ticket_controls=random"]
  args = ["--workdir", str(tmp_path), "--regime", "tickets", "--seeds", "0",
          *[a for s in sets for a in ("--set", s)]]
  assert cli.main(digits.get_config, "digits", args) == 0
  seed = tmp_path / "seed0"
  assert sorted(p.name for p in seed.iterdir()) == ["round0", "round1", "round1_random"]
  rewound = tickets.rewound_weights(seed / "round0", 1)["params"]
  first_epoch = [s for s in checkpoint.steps(seed / "round0")
                 if checkpoint.read_meta(seed / "round0", s)["epoch"] == 1]
  assert first_epoch  # round0 kept the epoch it is rewound to
  for name in ("round1", "round1_random"):
    last = checkpoint.restore(seed / name, which="latest")
    for layer in ("dense1", "dense2", "head"):
      pruned = last["masks"][layer]["kernel"] == 0
      kernel = last["state"]["trainable"]["params"][layer]["kernel"]
      assert pruned.any() and not pruned.all()
      # the pruned weights never train: they hold round0's epoch-1 values bit for bit
      np.testing.assert_array_equal(kernel[pruned], rewound[layer]["kernel"][pruned])
  # a round starts from exactly those weights, every one of them; the reinit control does not
  config = cli.build_config(digits.get_config, sets)
  dataset = data.load("digits", val_size=100)
  model = models.get(config.model, dataset.num_classes)
  configs = tickets.round_configs(config, seed)
  for name in ("round1", "round1_random"):
    start = run.initial_state(configs[name], model, dataset, steps=10).trainable["params"]
    chex.assert_trees_all_equal(start, rewound)
  reinit = run.initial_state(configs["round1"].replace(reinit_seed=tickets.REINIT_SEED_OFFSET),
                             model, dataset, steps=10).trainable["params"]
  assert not np.array_equal(reinit["dense1"]["kernel"], rewound["dense1"]["kernel"])
  with pytest.raises(run.RunError, match="kept no checkpoint of epoch 7"):
    tickets.rewound_weights(seed / "round0", 7)


@pytest.mark.slow
def test_kill_during_round_2_resumes_to_the_uninterrupted_result(study, tmp_path):
  # the ticket chain does not depend on the controls, so this run leaves them out
  command = [sys.executable, "-m", "experiments.digits", "--workdir", str(tmp_path), *TICKET_ARGS,
             "--set", "ticket_controls="]
  root = Path(__file__).parents[1]
  proc = subprocess.Popen(command, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  deadline = time.time() + 180
  while not (tmp_path / "seed0" / "round2" / "config.json").exists():
    assert proc.poll() is None and time.time() < deadline, proc.communicate()
    time.sleep(0.01)
  time.sleep(np.random.default_rng(0).uniform(0, 0.3))  # anywhere in round 2
  proc.kill()
  assert proc.wait() < 0  # killed, not finished
  assert subprocess.run(command, cwd=root, capture_output=True).returncode == 0
  timing = {"seconds", "images_per_second"}
  for name in ("round0", "round1", "round2"):
    a, b = run.read_metrics(study / "seed0" / name), run.read_metrics(tmp_path / "seed0" / name)
    assert [{k: v for k, v in m.items() if k not in timing} for m in a] == \
        [{k: v for k, v in m.items() if k not in timing} for m in b]
    ca = checkpoint.restore(study / "seed0" / name, which="latest")
    cb = checkpoint.restore(tmp_path / "seed0" / name, which="latest")
    chex.assert_trees_all_equal((ca["state"], ca["masks"]), (cb["state"], cb["masks"]))
