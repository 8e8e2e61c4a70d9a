"""`megabit train-teacher --data-root DIR --out RUN_DIR [--epochs 16] [--resume]`.

Trains the float distillation teacher (airbench94's layout and recipe, ~1.5x the multiply-adds of
``nqe-1mbit``; see ``megabit.train.teacher``) and writes RUN_DIR/model.pt, which
``megabit train-classifier --teacher RUN_DIR/model.pt`` distils from. Checkpoints every epoch.
"""

from __future__ import annotations

import argparse
import json


def build_parser() -> argparse.ArgumentParser:
    from megabit.train.teacher import TeacherTrainConfig

    d = TeacherTrainConfig()
    p = argparse.ArgumentParser(prog="megabit train-teacher", description=__doc__)
    p.add_argument("--data-root", required=True)
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoint.pt")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr, help="airbench units (divided by batch * (1 + 1/(1 - momentum)))")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--eval-every", type=int, default=d.eval_every, metavar="N")
    p.add_argument("--no-lookahead", action="store_true")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast (default: only where the CPU/GPU has native bf16)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default=d.device)
    p.add_argument("--limit-train", type=int, default=None)
    p.add_argument("--limit-test", type=int, default=None)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    from megabit.data import load_cifar10
    from megabit.train.teacher import TeacherTrainConfig, train_teacher

    cfg = TeacherTrainConfig(epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, seed=a.seed, eval_every=a.eval_every,
                             lookahead=not a.no_lookahead, compile=not a.no_compile, bf16=a.bf16, threads=a.threads,
                             device=a.device)
    train = load_cifar10(a.data_root, "train", a.limit_train)
    test = load_cifar10(a.data_root, "test", a.limit_test)
    print(json.dumps(train_teacher(cfg, train, test, a.out, resume=a.resume, progress=not a.quiet)))
    return 0
