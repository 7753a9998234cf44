#!/usr/bin/env bash
# A whole flight on a Slurm cluster: thousands of tiles -> one map of buildings.
#
#   examples/flight_slurm.sh CHECKPOINT 'FLIGHT/*.tif' OUT [TASKS]
#
# Run it on a login node (paths on a file system every node sees). It submits two job
# arrays of TASKS tasks (default 8):
#   1. predict: each task predicts its share of the flight (aerialct reads the share
#      from SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT): OUT/pred, one class
#      raster per tile, on the tile's grid and name;
#   2. vectorize, once every predict task succeeded (--dependency=afterok): each task
#      traces its share of the map's rows into OUT/buildings.gpkg.parts; the last task
#      to finish joins the parts into OUT/buildings.gpkg, one polygon per building
#      across tile seams, the same file one process writes.
# It prints the two job ids. A task that failed or was preempted is run again by
# resubmitting its index with the same arguments (sbatch --array=K ... this script's
# `step` line, printed below); finished work is kept and the last task joins.
#
# Environment:
#   PREDICT_SBATCH    sbatch options of the predict array (default: --gres=gpu:1)
#   VECTORIZE_SBATCH  sbatch options of the vectorize array (default: --cpus-per-task=2)
#   PREDICT_ARGS      extra `aerialct predict` options (e.g. --probabilities --batch-size 32)
#   VECTORIZE_ARGS    extra `aerialct vectorize` options (e.g. --min-area 2 --simplify 0.1)
#
# Inside a task the script runs itself as: flight_slurm.sh step predict|vectorize CKPT FLIGHT OUT
set -euo pipefail

step() {
  local what=$1 ckpt=$2 flight=$3 out=$4
  : "${SLURM_ARRAY_TASK_ID:?step runs inside a Slurm array task}"
  mkdir -p "$out"
  case "$what" in
    predict)
      # shellcheck disable=SC2086  # PREDICT_ARGS holds several options on purpose
      aerialct predict "$ckpt" "$flight" --out "$out/pred" ${PREDICT_ARGS:-}
      ;;
    vectorize)
      # shellcheck disable=SC2086
      aerialct vectorize "$out/pred" --out "$out/buildings.gpkg" ${VECTORIZE_ARGS:-}
      ;;
    *)
      echo "error: step $what: use predict or vectorize" >&2
      exit 2
      ;;
  esac
}

if [[ ${1:-} == step ]]; then
  if [[ $# -ne 5 ]]; then
    echo "usage: $0 step predict|vectorize CHECKPOINT FLIGHT OUT" >&2
    exit 2
  fi
  step "$2" "$3" "$4" "$5"
  exit 0
fi

if [[ $# -lt 3 || $# -gt 4 ]]; then
  echo "usage: $0 CHECKPOINT 'FLIGHT/*.tif' OUT [TASKS]" >&2
  exit 2
fi
ckpt=$1
flight=$2
out=$3
tasks=${4:-8}
if ! [[ $tasks =~ ^[1-9][0-9]*$ ]]; then
  echo "error: TASKS $tasks: give a whole number of array tasks, e.g. 8" >&2
  exit 2
fi
script=$(realpath "$0")
mkdir -p "$out/logs"

# shellcheck disable=SC2086  # the *_SBATCH variables hold several options on purpose
predict_job=$(sbatch --parsable --job-name=aerialct-predict --array="0-$((tasks - 1))" \
  --output="$out/logs/predict-%a.log" ${PREDICT_SBATCH:---gres=gpu:1} \
  "$script" step predict "$ckpt" "$flight" "$out")
predict_job=${predict_job%%;*}   # --parsable prints "id" or "id;cluster"
# shellcheck disable=SC2086
vectorize_job=$(sbatch --parsable --job-name=aerialct-vectorize --array="0-$((tasks - 1))" \
  --dependency="afterok:$predict_job" --output="$out/logs/vectorize-%a.log" \
  ${VECTORIZE_SBATCH:---cpus-per-task=2} \
  "$script" step vectorize "$ckpt" "$flight" "$out")
vectorize_job=${vectorize_job%%;*}
echo "predict: job $predict_job, vectorize: job $vectorize_job ($tasks tasks each)"
echo "buildings: $out/buildings.gpkg when both are done; logs in $out/logs"
echo "rerun a task K: sbatch --array=K ... $script step predict|vectorize $ckpt '$flight' $out"
