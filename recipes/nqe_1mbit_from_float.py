"""Recipe: the 1-Mbit NQE classifier by QAT from a trained float model of the same layers.

    python recipes/nqe_1mbit_from_float.py --data-root ../shared/data/cifar10-jpeg-q75 --out runs/nqe-ff [--resume]

Stage 1 (skipped when ``--float-model`` is given): the ``nqe-1mbit`` layers in float, 60 + 24
epochs (as `recipes/nqe_ablation.py --variants float`). Stage 2: full QAT started from it
(`megabit train-classifier --init FLOAT/model.pt`, see ``quantize_float_start``): BN phase at lr
1e-3, BN -> BSN conversion, BSN phase at lr 3e-4 without warm-up. Each stage resumes from its own
checkpoint with ``--resume``. Equivalent CLI for stage 2::

    megabit train-classifier --data-root DIR --out RUN/qat --init RUN/float/model.pt \
        --epochs-bn 32 --epochs-bsn 12 --lr 1e-3 --lr-bsn 3e-4 --warmup-bsn 0 \
        [--teacher RUN/float/model.pt --kd-alpha 0.7 --kd-temperature 4]

``--kd-alpha A`` (default 0: off) distils stage 2 from the float model it starts from (the bracketed flags above).
``--teacher airbench`` distils from a stronger float teacher instead, trained first by ``megabit
train-teacher`` (``--teacher-epochs``, out RUN/teacher); ``--teacher PATH`` takes any teacher file.

``--float-preset P`` trains stage 1 in another layer table with the same weight shapes (e.g. ``--float-preset
nqe-1mbit-ans --preset nqe-1mbit-ans-hr``: the bundled model's pair, one command instead of sessions 34-35's two);
stage 1 evaluates every ``--eval-every`` epochs, as stage 2.

[I] The paper trains from scratch; the float start, the stage-2 lengths and learning rates are ours.
"""
import argparse
import json
import sys
from pathlib import Path

from megabit.data import load_cifar10
from megabit.data.cifar import DataError
from megabit.models.nqe import get_preset
from megabit.train.classifier import TrainConfig, train_classifier

ap = argparse.ArgumentParser()
ap.add_argument("--data-root", required=True)
ap.add_argument("--out", required=True)
ap.add_argument("--resume", action="store_true")
ap.add_argument("--float-model", default=None, help="a trained float nqe-1mbit model.pt (skips stage 1)")
ap.add_argument("--float-epochs", type=int, default=84)
ap.add_argument("--float-preset", default=None,
                help="stage 1's layer table (default: --preset); e.g. nqe-1mbit-ans for nqe-1mbit-ans-hr, whose "
                     "weight shapes are the same (only the first max-pool moves), so the twin trains faster")
ap.add_argument("--epochs-bn", type=int, default=32)
ap.add_argument("--epochs-bsn", type=int, default=12)
ap.add_argument("--lr", type=float, default=1e-3)
ap.add_argument("--warmup-bsn", type=float, default=0.0,
                help="warm-up fraction of the BSN phase (default 0: start at --lr-bsn)")
ap.add_argument("--lr-bsn", type=float, default=3e-4)
ap.add_argument("--limit-train", type=int, default=None)
ap.add_argument("--limit-test", type=int, default=None)
ap.add_argument("--preset", default=None,
                help="layer table; with --float-model, the float model's weights are loaded into it "
                     "(same shapes: nqe-1mbit's float twin starts nqe-1mbit-hr)")
ap.add_argument("--device", default="auto")
ap.add_argument("--batch-size", type=int, default=256)
ap.add_argument("--seed", type=int, default=0, help="QAT stage's seed (data order, augmentation, init of new parts)")
ap.add_argument("--no-compile", action="store_true")
ap.add_argument("--eval-every", type=int, default=1, help="QAT stage: test-set accuracy every N epochs (and at phase ends)")
ap.add_argument("--kd-alpha", type=float, default=0.0,
                help="distil stage 2 from the float model (its own teacher) with this weight; 0: no distillation")
ap.add_argument("--kd-temperature", type=float, default=4.0)
ap.add_argument("--teacher", default=None,
                help="distil from this teacher instead of the float model: a model file, or 'airbench' to train "
                     "megabit's float teacher first (RUN/teacher, --teacher-epochs)")
ap.add_argument("--teacher-epochs", type=int, default=16)
ap.add_argument("--bsn-init", choices=("quantile", "fit"), default="fit",
                help="BN->BSN conversion (see megabit train-classifier --bsn-init)")
ap.add_argument("--bsn-fit-loss", choices=("mse", "mismatch"), default="mse")
ap.add_argument("--bsn-scale", choices=("layer", "channel"), default="layer",
                help="BSN shifts per layer (the paper) or per channel ([I]; see megabit train-classifier --bsn-scale)")
ap.add_argument("--ema-decay", type=float, default=0.0, help="[I] QAT stage: EMA of the weights over the BN phase "
                                                               "(saved as qat/ema_bn_end.pt; 0 = off)")
ap.add_argument("--epochs-act", type=int, default=0, help="[I] QAT stage: epochs with quantized activations and float "
                                                           "weights before the BN phase (0 = off; see TrainConfig.epochs_act)")
ap.add_argument("--bsn-mantissa-bits", type=int, choices=range(4), default=0, metavar="B")
a = ap.parse_args()
if a.teacher and a.kd_alpha <= 0:
    ap.error("--teacher needs --kd-alpha > 0")
if not (0.0 <= a.kd_alpha <= 1.0 and a.kd_temperature > 0):
    ap.error("--kd-alpha must be in [0, 1] and --kd-temperature > 0")
if a.eval_every < 1:
    ap.error("--eval-every must be >= 1")
for flag, name in (("--preset", a.preset), ("--float-preset", a.float_preset)):
    if name is not None:
        try:
            get_preset(name)
        except ValueError as e:
            ap.error(f"{flag}: {e}")
common = dict(preset=a.preset or TrainConfig.preset, device=a.device, batch_size=a.batch_size, compile=not a.no_compile)
try:
    train = load_cifar10(a.data_root, "train", a.limit_train)
    test = load_cifar10(a.data_root, "test", a.limit_test)
except DataError as e:
    sys.exit(f"nqe_1mbit_from_float: error: {e}")
out = Path(a.out)
float_model = a.float_model
if float_model is None:
    # one one-cycle schedule over all epochs, as the float baseline (a float run has no BSN phase)
    fcfg = TrainConfig(quantize=False, epochs_bn=a.float_epochs, epochs_bsn=0, eval_every=a.eval_every,
                       **(common | {"preset": a.float_preset or common["preset"]}))
    train_classifier(fcfg, train, test, out / "float", resume=a.resume)
    float_model = str(out / "float" / "model.pt")
teacher = a.teacher or float_model
if a.teacher == "airbench":
    from megabit.train.teacher import TeacherTrainConfig, train_teacher

    tcfg = TeacherTrainConfig(epochs=a.teacher_epochs, device=a.device, compile=not a.no_compile)
    train_teacher(tcfg, train, test, out / "teacher", resume=a.resume)
    teacher = str(out / "teacher" / "model.pt")
kd = dict(teacher=teacher, kd_alpha=a.kd_alpha, kd_temperature=a.kd_temperature) if a.kd_alpha > 0 else {}
qcfg = TrainConfig(init=float_model, init_preset=a.preset, epochs_bn=a.epochs_bn, epochs_bsn=a.epochs_bsn, lr=a.lr, lr_bsn=a.lr_bsn,
                   warmup_bsn=a.warmup_bsn, eval_every=a.eval_every, seed=a.seed, bsn_init=a.bsn_init, bsn_fit_loss=a.bsn_fit_loss,
                   bsn_granularity=a.bsn_scale, bsn_mantissa_bits=a.bsn_mantissa_bits, ema_decay=a.ema_decay, epochs_act=a.epochs_act, **kd, **common)
res = train_classifier(qcfg, train, test, out / "qat", resume=a.resume)
json.dump(res, sys.stdout, indent=2)
