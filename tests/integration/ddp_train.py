"""A tiny DDP training run over wds_audio, for tests/integration/test_torchrun.py.

Launched with ``torchrun --nproc_per_node=2`` (gloo, CPU). Each rank writes, per epoch, the keys
of every training batch and the valid keys of an evaluation pass to OUT/rank<r>.json, and a
checkpoint (model, optimizer, loader state) after every batch. ``--crash-after N`` makes rank 0
die hard after N training batches of epoch 1 (as a killed job would); ``--resume`` starts from
the checkpoint.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import wds_audio
from wds_audio.device.frontend import Frontend


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("source")
    p.add_argument("out", type=Path)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--crash-after", type=int, default=None)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--workers", type=int, default=1)
    args = p.parse_args()
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    train = wds_audio.loader(args.source, split="train", batch_size=6, sample_rate=16000, clip_seconds=0.5,
                             num_workers=args.workers, seed=11)
    fe = Frontend(sample_rate=16000, n_fft=256, hop_length=160, n_mels=16).eval()
    model = DDP(torch.nn.Linear(16, len(train.classes)))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    log_path = args.out / f"rank{rank}.json"
    ckpt = args.out / f"ckpt{rank}.pt"
    log = json.loads(log_path.read_text()) if args.resume else {"train": {}, "eval": {}, "len": len(train)}
    if args.resume:
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        train.load_state_dict(state["loader"])
    start_epoch = train.state_dict()["epoch"]
    for epoch in range(start_epoch, args.epochs):
        if not (args.resume and epoch == start_epoch):
            train.set_epoch(epoch)
        keys = log["train"].setdefault(str(epoch), [])
        for i, batch in enumerate(train):
            x = fe(batch.audio, batch.lengths).mean(-1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), batch.targets)
            opt.zero_grad()
            loss.backward()
            opt.step()
            keys.append(batch.keys)
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "loader": train.state_dict()}, ckpt)
            log_path.write_text(json.dumps(log))
            if args.crash_after is not None and epoch == 1 and len(keys) == args.crash_after and rank == 0:
                os._exit(17)  # a hard kill: no cleanup, no barrier
        ev = wds_audio.loader(args.source, split="valid", batch_size=5, sample_rate=16000, clip_seconds=None,
                              training=False, num_workers=args.workers)
        log["eval"][str(epoch)] = {"batches": 0, "keys": []}
        n = 0
        for b in ev:
            n += 1
            log["eval"][str(epoch)]["keys"] += [k for k, v in zip(b.keys, b.valid) if v]
        log["eval"][str(epoch)]["batches"] = n
        log_path.write_text(json.dumps(log))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
