"""Data modules, one per ``conf/data/*.yaml``; each satisfies ``protocol.ClassificationData``.

* ``digits`` (:mod:`~divergence_lab.data.digits`): scikit-learn's bundled 8x8 handwritten digits, the
  embedded default (no download);
* ``synthetic`` (:mod:`~divergence_lab.data.synthetic`): seeded Gaussian mixtures of any number of classes;
* ``tabular`` (:mod:`~divergence_lab.data.tabular`): numeric tables from scikit-learn (``sklearn:wine`` ...),
  a ``.npz`` or a ``.csv`` file, set in the config only;
* ``cifar10`` / ``cifar100`` (:mod:`~divergence_lab.data.cifar`): CIFAR read from disk (nothing is
  downloaded);
* ``gcd_digits`` / ``gcd_synthetic`` / ``gcd_cifar100`` (:mod:`~divergence_lab.data.gcd`): the generalized
  category discovery view of a base module (known and novel classes, two augmented views), which also
  satisfies :class:`~divergence_lab.data.protocol.CategoryDiscoveryData`.

The in-memory modules share :class:`~divergence_lab.data.tensor_datamodule.TensorDataModule`.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from divergence_lab.ground.targets import instantiate_target


def instantiate_datamodule(data_cfg: DictConfig, seed: int) -> Any:
    """Build and set up the datamodule of a ``data`` config (its ``name`` key is a label, not an argument).

    The values are resolved where the config sits, so an interpolation into the rest of the run's config
    (``data.tokenizer: ${model.path}``) reads the run's value."""
    resolved = OmegaConf.create(OmegaConf.to_container(data_cfg, resolve=True))
    arguments = OmegaConf.masked_copy(resolved, [key for key in resolved if key != "name"])
    datamodule = instantiate_target(arguments, "data", seed=seed)
    datamodule.setup()
    return datamodule
