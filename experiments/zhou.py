"""Supermasks of Zhou et al. (2019) "Deconstructing Lottery Tickets": LeNet-300-100 on MNIST and
Conv-2/4/6 on CIFAR-10, under three mask recipes chosen by the estimator:

    python -m experiments.zhou --set data_dir=DIR                    # Zhou et al.'s: bernoulli
    python -m experiments.zhou --set data_dir=DIR --set estimator=threshold   # the blog code's
    python -m experiments.zhou --set data_dir=DIR --set estimator=topk        # edge-popup's
    python -m experiments.zhou --set data_dir=DIR --set model=conv2 --seeds 0 1 2

  bernoulli  Zhou et al.: masks drawn from Bernoulli(sigmoid(s)), scores from 0 (p = 0.5) trained
             by SGD at lr 100 (momentum 0.9), signed-constant weights; each new best and the last
             epoch also report the mean test accuracy of 10 sampled masks, the figure they report.
  threshold  the blog code: sigmoid(s) > 0.5, scores from 1.0 trained by Adam at 1e-2, the
             model's default weight init.
  topk       edge-popup (Ramanujan et al. 2020): the 50% largest |scores| of each layer kept,
             kaiming-uniform scores trained by SGD at lr 0.1 (momentum 0.9), signed-constant
             weights.

Weights train with Adam at Frankle & Carbin's learning rates (batch 60 for LeNet, 64 for the
conv nets), as do fine-tunes: `finetune` with the weight runs' optimizer, lr and epochs (equal
budget), `finetune_original` as the blog code did (Adam at 1e-5). CIFAR-10 nets train on random
crops (4 pixels of padding) and horizontal flips, as edge-popup and most CIFAR-10 recipes do.
The best epoch is chosen on 5,000 validation images held out from the training files.

Reads MNIST / CIFAR-10 from --set data_dir=DIR (or $SMJAX_DATA_DIR): the original files or tfds.
Writes runs/zhou/{mask,weight,finetune,finetune_original}/ and runs/zhou/report/.
"""

import sys

from smjax import cli
from smjax.config import Config

WEIGHT_LR = {"lenet300-100": 1.2e-3, "conv2": 2e-4, "conv4": 3e-4, "conv6": 3e-4}
RECIPES = {
    "bernoulli": dict(score_init="constant", score_init_value=0.0, score_optimizer="sgd",
                      score_lr=100.0, weight_init="signed_constant", sampled_mask_evals=10),
    "threshold": dict(score_init="constant", score_init_value=1.0, score_optimizer="adam",
                      score_lr=1e-2, weight_init="default"),
    "topk": dict(score_init="kaiming_uniform", topk_fraction=0.5, score_optimizer="sgd",
                 score_lr=0.1, weight_init="signed_constant"),
}


def get_config(model: str = "lenet300-100", estimator: str = "bernoulli") -> Config:
  conv = model != "lenet300-100"
  lr = WEIGHT_LR.get(model, 1e-3)
  return Config(
      dataset="cifar10" if conv else "mnist", model=model, estimator=estimator,
      **RECIPES.get(estimator, {}), momentum=0.9, optimizer="adam", lr=lr,
      batch_size=64 if conv else 60, epochs=30, val_size=5000,
      crop_padding=4 if conv else 0, flip=conv,  # CIFAR-10: pad 4 + random crop + flip
      finetune_lr=lr, finetune_epochs=30, original_finetune=True)


if __name__ == "__main__":
  sys.exit(cli.main(get_config, "zhou", doc=__doc__))
