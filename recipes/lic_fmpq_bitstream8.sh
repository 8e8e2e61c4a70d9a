#!/bin/bash
# Real rANS bitstreams (compress + decompress) for the FMPQ study's variants of one architecture on
# the first 8 Kodak images, for codecs whose study evaluation used the likelihood estimate
# (cheng2020-anchor: its forward pass rounds y without the predicted means, as CompressAI's does, so
# forward-pass PSNR/bpp differ from what the decoder produces). Writes kodak8bs_<variant>.json next
# to the study's files; `recipes/lic_fmpq_bd.py --collect` then adds BD-rates on these.
#   OMP_NUM_THREADS=1 bash recipes/lic_fmpq_bitstream8.sh runs/fmpqbd cheng2020-anchor 0.0018 0.0035 &
#   OMP_NUM_THREADS=1 bash recipes/lic_fmpq_bitstream8.sh runs/fmpqbd cheng2020-anchor 0.0067 0.013 &
set -e
work=$1; arch=$2; shift 2
for lm in "$@"; do
  d=$work/$arch/l$lm
  [ -f $d/kodak8bs_float.json ] || megabit fmpq eval --checkpoint $d/float.pt --data ../shared/data/kodak \
      --limit 8 --rate bitstream --out $d/kodak8bs_float.json
  for v in u8 fmpq8 u6 fmpq6 u4 fmpq4; do
    [ -f $d/kodak8bs_$v.json ] || megabit fmpq eval --quantized $d/q_$v.pt --data ../shared/data/kodak \
        --limit 8 --rate bitstream --out $d/kodak8bs_$v.json
  done
done
