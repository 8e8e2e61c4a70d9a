"""Recipe: the shipped patch codec (src/megabit/assets/codec-nested.pt), trained on a 2-core CPU.

    nice -n 19 python recipes/codec_train.py --data-root ../shared/data/photos --out runs/codec [--resume]
        [--minutes 7 5 2 8] [--stop-after-min 5] [--threads 1]

Stages (see megabit.codec.train): float encoder + patch decoder on 32x32 patches -> quantized NQE
encoder (QAT with code distillation, BN) -> BSN -> refinement on 128x128 crops. Budgets are wall
minutes per stage; ``--stop-after-min`` ends a session early (checkpoint kept) and ``--resume``
continues, so the schedule can be run as several short sessions on a shared machine.
Training data: photos/ only (Kodak and CLIC are evaluation sets). Equivalent CLI:
``megabit train-codec --data-root ... --out ...``.
"""
import sys

from megabit.cli.main import main

# the recipe is the CLI (same options, one place): megabit train-codec ...
sys.exit(main(["train-codec", *sys.argv[1:]]))
