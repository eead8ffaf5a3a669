#!/bin/bash
# The fine-tuning bench's seven cases where the training areas disagree with the start model (WUDAPT, remap),
# 67 squares, re-run with the bundled model v5 as the start model (README "Train on your own city"). About 15
# minutes on 2 CPU cores shared with other jobs. The teacher cases of bench/finetune_final.sh are left out: their
# cities (Beihai, Montpellier, Rio) are training sites of v5, so they no longer test a city the model has not seen.
cd "$(dirname "$0")/.."
P=.venv/bin/python
B="bench/bench_finetune.py --out runs/bench_finetune_v5 --label v5"
for c in "wudapt:paris_20161130" "wudapt:paris_20161130 --half east" "wudapt:bercy_20161130" \
         "remap:nantes_20171014" "remap:nantes_20171014 --half east" "remap:valencia_20171107" "remap:valencia_20171107 --half east"; do
  echo "=== $c $(date)"; $P $B $c --squares 67
done
echo "=== done $(date)"
