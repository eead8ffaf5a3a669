#!/bin/bash
# The fine-tuning bench of README "Train on your own city" and docs/finetune_results.md: 16 runs of
# bench/bench_finetune.py with the defaults, one after another (17 minutes on 2 CPU cores), then
#   .venv/bin/python bench/finetune_report.py runs/bench_finetune_final --label final > docs/finetune_results.md
cd "$(dirname "$0")/.."
P=.venv/bin/python
B="bench/bench_finetune.py --out runs/bench_finetune_final --label final"
for c in "wudapt:paris_20161130" "wudapt:paris_20161130 --half east" "wudapt:bercy_20161130" \
         "remap:nantes_20171014" "remap:nantes_20171014 --half east" "remap:valencia_20171107" "remap:valencia_20171107 --half east" \
         "teacher:beihai_20180309" "teacher:beihai_20180309 --half east" "teacher:montpellier_20171030" "teacher:montpellier_20171030 --half east" \
         "teacher:rio_20171011" "teacher:rio_20171011 --half east"; do
  echo "=== $c $(date)"; $P $B $c --squares 67
done
for c in "wudapt:paris_20161130" "remap:nantes_20171014" "teacher:rio_20171011"; do
  echo "=== $c 30 $(date)"; $P $B $c --squares 30
done
echo "=== done $(date)"
