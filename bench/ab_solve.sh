#!/usr/bin/env bash
# A/B of time-to-solve between two checkouts, alternated seed by seed in one run (the machine is noisy).
#   bench/ab_solve.sh BEFORE_SRC AFTER_SRC [SEEDS] [OUT_DIR]
# BEFORE_SRC/AFTER_SRC: the src/ directories of two built checkouts (python setup.py build_ext --inplace).
# Writes OUT_DIR/{before,after}-SEED.json (bench_solve.py's --json) and prints both tables' rows.
set -euo pipefail
before=$1 after=$2 seeds=${3:-10} out=${4:-ab_solve}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
for ((seed = 0; seed < seeds; seed++)); do
    # Alternate which goes first, so neither side always runs on a warmer machine.
    if ((seed % 2)); then order="after before"; else order="before after"; fi
    for side in $order; do
        src=$before; [ "$side" = after ] && src=$after
        row=$(PYTHONPATH=$src python "$here/bench_solve.py" --seeds 1 --first-seed "$seed" --cap 20 \
              --json "$out/$side-$seed.json" | grep "^| $seed |")
        echo "$side $row"
    done
done
python - "$out" "$seeds" <<'PY'
import json, statistics, sys
out, seeds = sys.argv[1], int(sys.argv[2])
for side in ("before", "after"):
    runs = [json.load(open(f"{out}/{side}-{s}.json"))["runs"][0] for s in range(seeds)]
    t = [r["solved_after_seconds"] if r["confirmed"] else float("inf") for r in runs]
    sps = [r["steps_per_second"] for r in runs]
    print(f"{side}: median solve {statistics.median(t):.2f} s [{min(t):.2f}, {max(t):.2f}], "
          f"{sum(r['confirmed'] for r in runs)}/{seeds} confirmed, median {statistics.median(sps):,.0f} steps/s")
PY
