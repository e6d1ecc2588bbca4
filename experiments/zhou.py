"""Zhou et al. (2019) "Deconstructing Lottery Tickets": supermasks of LeNet-300-100 on MNIST
and Conv-2/4/6 on CIFAR-10, with a selectable estimator.

    python -m experiments.zhou                                   # lenet300-100, MNIST, bernoulli
    python -m experiments.zhou --set model=conv4                 # Conv-4 on CIFAR-10
    python -m experiments.zhou --set estimator=topk --set topk_fraction=0.5

Writes runs/zhou/{mask,weight,finetune}/ and runs/zhou/report/. Masks are trained with SGD at
lr 100 (momentum 0.9) from scores 0 (p = 0.5) over signed-constant weights; weights use Adam at
the Frankle & Carbin learning rates. Each mask epoch reports the deterministic mask's test
accuracy and, as Zhou et al. do, the mean over 10 sampled masks (`test_accuracy_sampled_mean`).
Needs the prepared tfds dataset (TFDS_DATA_DIR).
"""

import sys

from smjax import cli
from smjax.config import Config

WEIGHT_LR = {"lenet300-100": 1.2e-3, "conv2": 2e-4, "conv4": 3e-4, "conv6": 3e-4}


def get_config(model: str = "lenet300-100") -> Config:
  return Config(
      dataset="mnist" if model == "lenet300-100" else "cifar10", model=model,
      estimator="bernoulli", score_init="constant", score_init_value=0.0,
      weight_init="signed_constant", score_optimizer="sgd", score_lr=100.0, momentum=0.9,
      optimizer="adam", lr=WEIGHT_LR.get(model, 1e-3), batch_size=60 if model == "lenet300-100"
      else 64, epochs=30, finetune_lr=1e-5, finetune_epochs=30, val_size=5000,
      sampled_mask_evals=10)  # Zhou et al. report the mean test accuracy of 10 sampled masks


if __name__ == "__main__":
  sys.exit(cli.main(get_config, "zhou", doc=__doc__))
