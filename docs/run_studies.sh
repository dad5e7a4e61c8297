#!/usr/bin/env bash
# The sweeps behind docs/RESULTS.md, through `ito-sweep run` itself, on the embedded data; each ends by copying its
# results.json into docs/results/<study>/ (python docs/make_results.py collect). Two phases:
#   bash docs/run_studies.sh lr        # the LR sweep (one seed); then set train.lr in configs/comparison/<m>.yaml to
#                                      # the rate RESULTS.md's LR table marks chosen (tests/unit/test_results_doc.py)
#   bash docs/run_studies.sh studies   # the comparison (5 seeds), its equal-compute arms, then the ablation
# Then: python docs/make_results.py (RESULTS.md's tables and the plots). ROOT: the storage root (default
# outputs/studies); CONCURRENT: training jobs at once per sweep (default 4).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${ROOT:-outputs/studies}
PY=${PY:-.venv/bin/python}

sweep() {  # sweep <name> <study> <overrides...>
    local name=$1 study=$2
    shift 2
    .venv/bin/ito-sweep run "storage.root=$ROOT" "$@" --sweep-name "$name" --max-concurrent-train "${CONCURRENT:-4}"
    "$PY" docs/make_results.py collect "$ROOT" "$name" "$study"
}

equal_compute() {  # each method at CLIP's compute, steps by FLOPs and by step time, one sweep per method
    "$PY" docs/make_results.py steps | while read -r method steps; do
        sweep "equal-compute-$method" equal_compute experiment=method_comparison "comparison=$method" \
            "train.steps=$steps" "report.baseline=''"
    done
}

case ${1:-} in
    lr) sweep lr-sweep lr_sweep experiment=method_comparison seed=0 train.lr=1e-3,2e-3,4e-3,8e-3 ;;
    studies)
        # The ablation's ito arm is the comparison's ito run (one run key): it starts once the comparison is done.
        (sweep methods methods experiment=method_comparison && sweep ablation ablation experiment=ito_ablation) &
        equal_compute &
        wait ;;
    *) echo "usage: bash docs/run_studies.sh lr|studies" >&2; exit 2 ;;
esac
