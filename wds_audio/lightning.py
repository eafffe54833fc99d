"""Lightning: :class:`AudioDataModule`, wds_audio's loaders and Frontend under a Lightning ``Trainer``.

Optional (``pip install wds-audio[lightning]``); ``import wds_audio`` never imports Lightning, this
module does. It works with ``pytorch_lightning`` and with ``lightning.pytorch``: the one already
imported when this module is first imported, else ``pytorch_lightning``, else ``lightning.pytorch``
(the Trainer and the DataModule must come from the same one).

What the DataModule does for the Trainer:

- **rank and world size** come from the Trainer (``trainer.global_rank``, ``trainer.world_size``),
  and each loader splits the epoch over the ranks itself (equal batch counts on every rank). The
  loaders are not torch DataLoaders, so the Trainer never injects a ``DistributedSampler``
  (``use_distributed_sampler`` does not matter).
- **epochs**: the training loader is set to ``trainer.current_epoch`` when the Trainer starts
  iterating it (a new shuffle every epoch), and so is the Frontend's augmentation.
- **mid-epoch resume**: the training loader has ``state_dict``/``load_state_dict``, so the Trainer
  keeps its state in every checkpoint (``checkpoint["loops"]["fit_loop"]["state_dict"]
  ["combined_loader"]``) and restores it on ``trainer.fit(..., ckpt_path=...)``: the resumed run
  goes on with the batches the interrupted one would have had. Ranks step together, so one rank's
  state (rank 0 writes the file) is every rank's. Resume with the world size and ``streams`` of
  the checkpoint: the loader's own elastic resume (another world size, mid-epoch) replans the rest
  of the epoch with another batch count, which the Trainer's progress counters (restored from the
  checkpoint) cannot follow; an epoch-end checkpoint can be resumed on any world size.
- **the Frontend on the device**: in ``on_after_batch_transfer``, once the batch is on the
  model's device, the Frontend (moved there on first use) computes the features: the batch the
  steps receive is the same :class:`~wds_audio.pipeline.batch.Batch` with ``features`` set and
  ``targets`` mixed (with Mixup). In training the Frontend is in train mode; in validation, test
  and predict it is in eval mode (no waveform augmentation, SpecAugment or Mixup), and those
  loaders' batches carry ``training=False`` as well.

Example:
    >>> import pytorch_lightning as pl                                       # doctest: +SKIP
    >>> from wds_audio import Frontend
    >>> from wds_audio.lightning import AudioDataModule
    >>> dm = AudioDataModule("data/esc50", folds=[1, 2, 3, 4], batch_size=64, sample_rate=32000,
    ...                      clip_seconds=5.0, num_workers=8,
    ...                      frontend=Frontend(sample_rate=32000, n_mels=128, specaugment=True))
    >>> # validation: the dataset's `valid` split if it has one, else the training split's other folds (5)
    >>> trainer = pl.Trainer(accelerator="gpu", devices=4, strategy="ddp", max_epochs=10)
    >>> trainer.fit(MyModel(num_classes=dm.num_classes), dm)   # steps get batch.features, batch.targets
"""
from __future__ import annotations

import sys
from dataclasses import replace
from typing import Any, Iterator

import torch

if "lightning.pytorch" in sys.modules or ("lightning" in sys.modules and "pytorch_lightning" not in sys.modules):
    import lightning.pytorch as pl
else:
    try:
        import pytorch_lightning as pl
    except ImportError:  # pragma: no cover - depends on what is installed
        try:
            import lightning.pytorch as pl
        except ImportError as e:
            raise ImportError("wds_audio.lightning needs Lightning: pip install 'wds-audio[lightning]' "
                              "(pytorch-lightning) or pip install lightning") from e

from .backends import loader as make_loader
from .pipeline.batch import Batch
from .pipeline.catalog import Catalog

__all__ = ["AudioDataModule"]

_AUTO = "auto"


class _Loader:
    """A wds_audio loader as the Trainer sees it: ``len`` and iteration. Its DataLoader (``dataset``,
    ``sampler``) is not shown: the Trainer would take it for a torch DataLoader over an
    IterableDataset and warn that its length may be wrong (it is exact)."""

    _HIDDEN = frozenset({"loader", "dataset", "sampler", "batch_sampler"})

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Batch]:
        return iter(self.loader)

    def __getattr__(self, name: str) -> Any:  # classes, audio_rate, metrics(), plan(), ... of the loader
        if name in self._HIDDEN:
            raise AttributeError(name)
        return getattr(self.loader, name)


class _TrainLoader(_Loader):
    """The training loader: iteration set to the Trainer's epoch, and ``state_dict``/``load_state_dict``
    (which make the Trainer checkpoint and restore it)."""

    def __init__(self, loader: Any, module: "AudioDataModule") -> None:
        super().__init__(loader)
        self.module = module
        self._loaded: dict[str, Any] | None = None  # a state restored from a checkpoint, not yet iterated

    def __iter__(self) -> Iterator[Batch]:
        # A generator: the Trainer calls iter() before an epoch's first batch is asked for; the
        # epoch is read when it is (trainer.current_epoch is that epoch's by then).
        epoch = self.module._current_epoch()
        loaded, self._loaded = self._loaded, None
        if loaded is None or int(loaded["epoch"]) != epoch:
            self.loader.set_epoch(epoch)  # a new epoch from its start (a loaded state of another epoch is spent)
        elif int(loaded["batches"]) > 0 and self._layout(loaded) != self._layout(self.loader.state_dict()):
            raise ValueError(
                f"the checkpoint was taken mid-epoch with world_size={loaded['world_size']} and streams="
                f"{loaded['streams']}; this run has world_size={self.loader.world_size} and streams="
                f"{self.loader.cfg.streams}. Under the Trainer, resume a mid-epoch checkpoint with the same "
                "world size and streams (the loader would replan the rest of the epoch with another batch count, "
                "which the Trainer's restored step counters cannot follow), or resume from an epoch-end checkpoint")
        yield from self.loader

    @staticmethod
    def _layout(state: dict[str, Any]) -> tuple[int, int]:
        return int(state["world_size"]), int(state["streams"])

    def state_dict(self) -> dict[str, Any]:
        return self.loader.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loader.load_state_dict(state)
        self._loaded = dict(state)


class AudioDataModule(pl.LightningDataModule):
    """Training, validation and test loaders over one dataset, and its device Frontend.

    source: a dataset folder/URL with dataset.json (written by shardgen), or a shard pattern
        (then ``classes=[...]``; a pattern has no splits, so it gives a training loader only).
    folds: the training folds of ``train_split`` (None: all of its shards).
    batch_size: per rank; ``eval_batch_size`` for validation and test (default: ``batch_size``).
    frontend: a :class:`wds_audio.Frontend` run on the model's device in ``on_after_batch_transfer``
        (train mode in training, eval mode otherwise); None: batches are handed over as they come.
    val_split, val_folds: ``"auto"`` (default): the ``valid`` split (all folds) if the dataset has
        one, else the folds of ``train_split`` that are not ``folds`` (ESC-50 style cross-validation:
        ``folds=[1, 2, 3, 4]`` validates on fold 5). None: no validation loader.
    test_split, test_folds: ``"auto"``: the ``test`` split if the dataset has one, else none.
    **loader_kwargs: for every loader (see :class:`wds_audio.pipeline.config.LoaderConfig`):
        ``sample_rate``, ``clip_seconds``, ``num_workers``, ``seed``, ``rebalance`` (training only),
        ``pcm_on_device``, ``resample_on_device``, ``source_options``, ...

    Example:
        >>> dm = AudioDataModule("data/demo", folds=[1, 2, 3, 4], batch_size=32, sample_rate=16000,
        ...                      clip_seconds=2.0, frontend=Frontend(sample_rate=16000, n_mels=64))  # doctest: +SKIP
        >>> trainer.fit(model, dm)                                                                # doctest: +SKIP
        >>> # in the LightningModule:
        >>> def training_step(self, batch, batch_idx):
        ...     return F.binary_cross_entropy_with_logits(self.net(batch.features), batch.targets)
        >>> def validation_step(self, batch, batch_idx):     # batch.valid: False on a rank's fill-ins
        ...     loss = F.binary_cross_entropy_with_logits(self.net(batch.features), batch.targets, reduction="none")
        ...     self.log("val_loss", loss[batch.valid].mean(), sync_dist=True)
    """

    def __init__(self, source: str, folds: list[int] | None = None, batch_size: int = 32, frontend: Any = None, *,
                 train_split: str = "train", val_split: str | None = _AUTO, val_folds: list[int] | None = None,
                 test_split: str | None = _AUTO, test_folds: list[int] | None = None,
                 eval_batch_size: int | None = None, sample_rate: int = 16000, clip_seconds: float | None = None,
                 **loader_kwargs: Any) -> None:
        super().__init__()
        if loader_kwargs.pop("training", True) is not True:
            raise ValueError("training= is chosen per loader (True for training, False for validation and test)")
        self.source, self.folds, self.batch_size = str(source), folds, batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.frontend = frontend
        self.train_split = train_split
        self.sample_rate, self.clip_seconds = sample_rate, clip_seconds
        self.loader_kwargs = loader_kwargs
        self._catalog = Catalog.open(self.source, train_split, folds, loader_kwargs.get("classes"),
                                     loader_kwargs.get("source_options"))
        self.val_split, self.val_folds = self._resolve(val_split, val_folds, "valid", cross_validate=True)
        self.test_split, self.test_folds = self._resolve(test_split, test_folds, "test", cross_validate=False)
        self._fe_device: torch.device | None = None

    # -- what the dataset holds ---------------------------------------------------------------------

    @property
    def classes(self) -> list[str]:
        return self._catalog.classes

    @property
    def num_classes(self) -> int:
        return len(self._catalog.classes)

    def _resolve(self, split: str | None, folds: list[int] | None, name: str,
                 cross_validate: bool) -> tuple[str | None, list[int] | None]:
        if split != _AUTO:
            return split, folds
        splits = self._catalog.manifest.get("splits", {})
        if name in splits:
            return name, folds
        if folds is not None:
            return self.train_split, folds
        if cross_validate and self.folds is not None and self.train_split in splits:
            have = sorted({s["fold"] for s in splits[self.train_split]["shards"] if s.get("fold") is not None})
            rest = [f for f in have if f not in set(self.folds)]
            if rest:
                return self.train_split, rest
        return None, None

    # -- the loaders ---------------------------------------------------------------------------------

    def _current_epoch(self) -> int:
        return int(self.trainer.current_epoch) if self.trainer is not None else 0

    def _make(self, split: str, folds: list[int] | None, training: bool, batch_size: int) -> Any:
        kw = dict(self.loader_kwargs)
        if not training:
            kw.pop("rebalance", None)
        if self.trainer is not None:  # the Trainer's ranks, whatever torch.distributed or the environment say
            kw.setdefault("rank", int(self.trainer.global_rank))
            kw.setdefault("world_size", int(self.trainer.world_size))
        loader = make_loader(self.source, split=split, folds=folds, batch_size=batch_size,
                             sample_rate=self.sample_rate, clip_seconds=self.clip_seconds, training=training, **kw)
        fe_rate = getattr(self.frontend, "input_sample_rate", None)
        rate = getattr(loader, "audio_rate", None)
        if fe_rate is not None and rate is not None and fe_rate != rate:
            raise ValueError(f"the frontend takes audio at {fe_rate} Hz, batches carry it at {rate} Hz (build it "
                             f"with sample_rate={rate}, or input_sample_rate={rate} to resample)")
        return loader

    def train_dataloader(self) -> _TrainLoader:
        """The training loader of this rank: shuffled anew every epoch, checkpointed by the Trainer."""
        return _TrainLoader(self._make(self.train_split, self.folds, True, self.batch_size), self)

    def val_dataloader(self) -> _Loader:
        """The validation loader of this rank (each clip once across ranks; fill-ins ``valid=False``)."""
        if self.val_split is None:
            raise ValueError(f"{self.source}: no validation data (no 'valid' split, and no training folds left "
                             "over): give val_split= / val_folds=")
        return _Loader(self._make(self.val_split, self.val_folds, False, self.eval_batch_size))

    def test_dataloader(self) -> _Loader:
        """The test loader of this rank (as validation)."""
        if self.test_split is None:
            raise ValueError(f"{self.source}: no test data (no 'test' split): give test_split= / test_folds=")
        return _Loader(self._make(self.test_split, self.test_folds, False, self.eval_batch_size))

    # -- on the device -------------------------------------------------------------------------------

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        if isinstance(batch, Batch):  # pinned by the loader on a CUDA machine: copied asynchronously
            return batch.to(device, non_blocking=torch.device(device).type == "cuda")
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """The Frontend's features, on the device: train mode while the Trainer trains, eval mode in
        validation, test and predict (whatever mode it was left in)."""
        if self.frontend is None or not isinstance(batch, Batch):
            return batch
        fe = self.frontend
        device = batch.audio.device
        if self._fe_device != device:
            fe.to(device)
            self._fe_device = device
        training = bool(self.trainer is not None and self.trainer.training and batch.training)
        if fe.training != training:
            fe.train(training)
        if training and hasattr(fe, "set_epoch"):
            fe.set_epoch(self._current_epoch())
        if training:
            features, targets = fe(batch)
        else:
            with torch.no_grad():
                features, targets = fe(batch)
        return replace(batch, features=features, targets=targets)

    def state_dict(self) -> dict[str, Any]:
        """Nothing of its own: the training loader's state is kept by the Trainer's fit loop."""
        return {}
