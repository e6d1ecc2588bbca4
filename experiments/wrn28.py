"""The reference experiment's config, shared by `mnist_wrn28` and `cifar10_wrn28`.

Wide ResNet 28-8 with masks on every conv and dense kernel, batch 128, lr 0.01, 30 epochs of
mask-only and of weight-only training from one initialization, random flips, translations and
rotations; then the best mask checkpoint frozen and the weights finetuned 30 epochs at lr 1e-5.

protocol="clean" (default): the best checkpoint is picked on a validation split held out from
  the training data (5,000 images) and BN affine params are frozen in mask runs.
protocol="original": the published code as closely as this design allows: Adam everywhere,
  reduce-lr-on-plateau of training accuracy (patience 2, factor 0.1), flip + 20 degree rotations
  + 0.2 shifts, scores from 1.0, biases masked too, BN trained in mask runs, keras-contrib's
  max-pool downsampling, and the best checkpoint picked on the test set.
"""

from smjax.config import Config


def get_config(dataset: str, protocol: str = "clean") -> Config:
  common = dict(dataset=dataset, model="wrn28-8", batch_size=128, epochs=30, lr=0.01,
                score_lr=0.01, finetune_lr=1e-5, finetune_epochs=30, score_init="constant",
                score_init_value=1.0, flip=True, protocol=protocol)
  if protocol == "original":
    return Config(**common, optimizer="adam", score_optimizer="adam", schedule="plateau",
                  plateau_patience=2, plateau_factor=0.1, max_rotate=20.0, max_translate=0.2,
                  mask_biases=True, train_bn_with_mask=True, downsampling="maxpool", val_size=0)
  return Config(**common, optimizer="sgd", momentum=0.9, score_optimizer="adam",
                max_rotate=15.0, max_translate=0.1, val_size=5000)
