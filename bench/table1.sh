#!/usr/bin/env bash
# Our Table I: the six variants of the paper trained on the same data with the same budget and seeds, with the
# bundled configuration (configs/bundled.yaml) and overrides for the budget. Run by hand (hours on 2 CPU cores):
#   bash bench/table1.sh                       # defaults below
#   EPOCHS=160 DECAY_EVERY=12 SEEDS="0" bash bench/table1.sh
# then: .venv/bin/python bench/table1.py runs/table1
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${EPOCHS:-80}
DECAY_EVERY=${DECAY_EVERY:-6}
SEEDS=${SEEDS:-"0 1"}
OUT=${OUT:-runs/table1}
mkdir -p "$OUT"
for seed in $SEEDS; do
  for v in hse lcz mtl_equal mtl_learned mtl_learned_p2f mtl_no_cbam; do
    run="$OUT/${v}_s${seed}"
    if [ -f "$run/model_card.json" ]; then echo "done already: $run"; continue; fi
    rm -rf "$run"
    echo "$(date +%T) training $run"
    .venv/bin/python -m core.train --config configs/bundled.yaml --variant "$v" --seed "$seed" \
      --epochs "$EPOCHS" --lr-decay-every "$DECAY_EVERY" --out "$run" > "$run.log" 2>&1
  done
done
echo "$(date +%T) all runs done"
