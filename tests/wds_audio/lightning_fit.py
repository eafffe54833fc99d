"""A tiny Lightning DDP fit over wds_audio.lightning.AudioDataModule, for tests/wds_audio/test_lightning.py.

Launched with ``torchrun --nproc_per_node=2`` (gloo, CPU; Lightning sees torchrun's environment and
does not launch processes of its own). Each rank writes OUT/<tag>_rank<r>.json: per training batch
(epoch, batch_idx, keys, whether its features differ from an eval-mode Frontend's, the Frontend's
mode, a feature checksum), per validation batch (epoch, valid keys, whether its features equal the
eval-mode Frontend's, whether its targets are 0/1, the Frontend's mode), and the trainer's rank and
world size. ``--ckpt-every K`` saves a checkpoint every K steps (ModelCheckpoint, mid-epoch);
``--resume CKPT`` resumes the fit from one; ``--test`` then runs ``trainer.test`` (on the valid split), logged
as ``test``.
"""
from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.strategies import DDPStrategy

from wds_audio import Frontend, Gain
from wds_audio.lightning import AudioDataModule

BATCH, CLIP, SEED, N_MELS = 8, 0.5, 7, 16


def frontend() -> Frontend:
    return Frontend(sample_rate=16000, n_fft=256, hop_length=160, n_mels=N_MELS, augment=[Gain(-6, 6, p=1.0)],
                    specaugment=True, seed=3)


class Tiny(pl.LightningModule):
    def __init__(self, num_classes: int, reference: Frontend) -> None:
        super().__init__()
        self.net = torch.nn.Linear(N_MELS, num_classes)
        self._ref = {"fe": reference.eval()}  # not a submodule: no part of the model or its checkpoint
        self.log_: dict = {"train": [], "val": []}

    def _same_as_eval(self, batch) -> bool:
        with torch.no_grad():
            return torch.equal(self._ref["fe"](batch.audio, batch.lengths), batch.features)

    def training_step(self, batch, batch_idx):
        fe = self.trainer.datamodule.frontend
        self.log_["train"].append({"epoch": self.current_epoch, "idx": batch_idx, "keys": batch.keys,
                                   "augmented": not self._same_as_eval(batch), "fe_training": fe.training,
                                   "sum": float(batch.features.double().sum())})
        logits = self.net(batch.features.mean(-1))
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, batch.targets)

    def validation_step(self, batch, batch_idx):
        fe = self.trainer.datamodule.frontend
        self.log_["val"].append({"epoch": self.current_epoch, "keys": [k for k, v in zip(batch.keys, batch.valid) if v],
                                 "plain": self._same_as_eval(batch), "fe_training": fe.training,
                                 "binary": bool(((batch.targets == 0) | (batch.targets == 1)).all()),
                                 "batch_training": batch.training})
        logits = self.net(batch.features.mean(-1))
        self.log("val_loss", torch.nn.functional.binary_cross_entropy_with_logits(logits, batch.targets), sync_dist=True,
                 batch_size=len(batch))

    def test_step(self, batch, batch_idx):
        self.log_.setdefault("test", []).append({"keys": [k for k, v in zip(batch.keys, batch.valid) if v],
                                                 "plain": self._same_as_eval(batch),
                                                 "fe_training": self.trainer.datamodule.frontend.training})

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("source")
    p.add_argument("out", type=Path)
    p.add_argument("--tag", default="full")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--ckpt-every", type=int, default=None)
    p.add_argument("--resume", default=None)
    p.add_argument("--test", action="store_true", help="then trainer.test (on the valid split)")
    args = p.parse_args()
    torch.set_num_threads(1)
    pl.seed_everything(0, verbose=False)
    fe = frontend()
    dm = AudioDataModule(args.source, folds=[1, 2, 3, 4], batch_size=BATCH, frontend=fe, sample_rate=16000,
                         clip_seconds=CLIP, seed=SEED, eval_batch_size=4, test_split="valid")
    model = Tiny(dm.num_classes, copy.deepcopy(fe))
    callbacks = []
    if args.ckpt_every:
        callbacks.append(ModelCheckpoint(dirpath=args.out / f"ckpt-{args.tag}", filename="mid-{step}",
                                         every_n_train_steps=args.ckpt_every, save_top_k=-1))
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy=DDPStrategy(process_group_backend="gloo"),
                         max_epochs=args.epochs, num_sanity_val_steps=0, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=bool(callbacks), callbacks=callbacks,
                         default_root_dir=str(args.out))
    trainer.fit(model, dm, ckpt_path=args.resume)
    if args.test:
        trainer.test(model, dm, verbose=False)
    out = {**model.log_, "rank": trainer.global_rank, "world": trainer.world_size, "len": len(dm.train_dataloader())}
    (args.out / f"{args.tag}_rank{trainer.global_rank}.json").write_text(json.dumps(out))


if __name__ == "__main__":
    main()
