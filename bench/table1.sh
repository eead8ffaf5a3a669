#!/usr/bin/env bash
# Trains the six variants of Table I with the bundled configuration (same data, budget and seed).
cd "$(dirname "$0")/.."
mkdir -p runs/table1
for v in mtl_learned_p2f lcz hse mtl_equal mtl_learned mtl_no_cbam; do
  rm -rf runs/table1/$v
  .venv/bin/python -m core.train --config configs/bundled.yaml --variant $v --out runs/table1/$v > runs/table1/$v.log 2>&1
done
echo ALLDONE > runs/table1/done
