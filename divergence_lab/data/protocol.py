"""What the methods and the run layer may rely on from a data module, stated as ``typing.Protocol`` s.

Every ``conf/data/*.yaml`` builds (through :func:`divergence_lab.data.instantiate_datamodule`) a
LightningDataModule that is already set up and satisfies :class:`ClassificationData`; the GCD configs
(``gcd_*``) satisfy :class:`CategoryDiscoveryData` as well. Both are ``runtime_checkable``: ``isinstance``
checks that the members exist (the attributes only exist once :meth:`~ClassificationData.setup` has run),
not their types or the semantics documented here, which ``tests/data/test_protocol.py`` checks.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch import Tensor
from torch.utils.data import DataLoader


@runtime_checkable
class ClassificationData(Protocol):
    """A classification data set with fixed train/val/test splits, as methods and the run layer see it.

    Attributes (set by :meth:`setup`):

    * ``num_classes``: ``K``; labels are ``int64`` in ``0..K-1``;
    * ``input_shape``: the shape of one example (``(F,)`` for vectors, ``(C, H, W)`` for images); a batch
      of inputs is a ``float32`` tensor ``(B, *input_shape)``, except for text classification
      (:mod:`divergence_lab.data.text_classification`), whose examples are ``int64`` token rows ``(3, L)``.
    """

    num_classes: int
    input_shape: tuple[int, ...]

    def setup(self, stage: str | None = None) -> None:
        """Load or generate the splits; idempotent (Lightning calls it again on a set-up module)."""
        ...

    def train_dataloader(self) -> DataLoader:
        """The training batches, in an order that is a function of ``(seed, epoch)`` only.

        ``train_dataloader().sampler`` has ``set_epoch(epoch)``
        (:class:`~divergence_lab.data.tensor_datamodule.EpochSeededSampler`): Lightning calls it at the
        start of every epoch, loops outside Lightning call it themselves; the batches of epoch ``e`` are
        then the same in every process and after a resume from an end-of-epoch checkpoint. A batch is
        ``(x, y)`` (``x`` float32 ``(B, *input_shape)``, ``y`` int64 ``(B,)``), except for
        :class:`CategoryDiscoveryData`, whose batches are documented there.
        """
        ...

    def augment_training_batch(self, batch: Any) -> Any:
        """A training batch (already on its device) as training sees it: the data's augmentation applied
        (CIFAR: random crop and flip), drawn from the global random streams; the batch itself where the data
        have none. Lightning applies it to every training batch; a loop outside Lightning (a stage) calls it
        on the batches it trains on."""
        ...

    def val_dataloader(self) -> DataLoader:
        """``(x, y)`` batches of the validation split, in a fixed order (no shuffling)."""
        ...

    def test_dataloader(self) -> DataLoader:
        """``(x, y)`` batches of the test split, in a fixed order (no shuffling)."""
        ...

    def data_fingerprint(self) -> str:
        """A SHA-256 hex digest (64 characters) of the data served, for the teacher cache's key.

        Call after :meth:`setup`. Equal data (dataset class, split, examples, labels after label noise)
        gives equal digests and a change of any of them changes the digest; it costs far less than an
        epoch. See :meth:`~divergence_lab.data.tensor_datamodule.TensorDataModule.data_fingerprint`.
        """
        ...

    def train_inputs(self) -> Tensor:
        """Every training input as one tensor ``(N_train, *input_shape)`` (float32; int64 for text), in order.

        Dataset order is the order of the training set itself (index ``i`` is the ``i``-th training
        example, before any shuffling by the loader); it does not depend on ``seed`` or the epoch. The
        tensor is the module's own storage, not a copy: callers must not modify it in place.
        """
        ...


@runtime_checkable
class CategoryDiscoveryData(ClassificationData, Protocol):
    """A generalized-category-discovery view of a labelled data set (:mod:`divergence_lab.data.gcd`).

    * ``num_known``: the known classes are ``0..num_known-1``, the novel ones ``num_known..num_classes-1``;
    * ``augment_kind``: the name of the augmentation drawing the two views (``digits``, ``crop_flip`` or
      ``noise``).

    Training batches are ``(view1, view2, y, labelled)``: two augmented views (float32
    ``(B, *input_shape)``), ``y`` int64 ``(B,)`` holding the label where ``labelled`` (bool ``(B,)``) is
    true and ``-1`` elsewhere. :meth:`train_inputs` are the un-augmented training images (labelled and
    unlabelled); validation and test batches are ``(x, y)`` over the unlabelled training images with their
    true labels (the transductive GCD protocol).
    """

    num_known: int
    augment_kind: str
