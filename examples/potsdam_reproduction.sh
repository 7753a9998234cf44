#!/usr/bin/env bash
# Reproduce the CT paper's Potsdam table with aerialct.
#
#   examples/potsdam_reproduction.sh POTSDAM_ROOT OUT [PRESET ...]
#
# POTSDAM_ROOT holds the ISPRS release (top_potsdam_*_RGB.tif, *_label.tif and, if
# present, *_label_noBoundary.tif). The script tiles it with the CT protocol
# (standard 24/14 split, 500 px crops resized to 512, eroded labels for test),
# trains each preset in configs/ (default: the paper's nine: three models x
# {no contrast, CT-CL, CT-InfoNCE}), predicts the test chips, scores them
# (mean IoU over five classes, clutter excluded) and writes OUT/results.md.
#
# Environment:
#   DEVICE=cuda|cpu|auto      where to train and predict (default auto)
#   AERIALCT_SET="k=v k=v"    config overrides for every run (e.g. "train.epochs=1")
#   TILE_ARGS="..."           extra arguments for `aerialct tile`
# A finished step is not redone: rerunning after a failure or a kill continues where it
# stopped. A preset whose training was interrupted resumes from its last.pt (--resume);
# an interrupted prediction continues with the scenes not yet written (--skip-existing).
set -euo pipefail

if [[ $# -lt 2 ]]; then
  echo "usage: $0 POTSDAM_ROOT OUT [PRESET ...]" >&2
  exit 2
fi
root=$1
out=$2
shift 2
presets=("$@")
if [[ ${#presets[@]} -eq 0 ]]; then
  presets=(dcswin dcswin-ct-cl dcswin-ct-infonce
           unetformer unetformer-ct-cl unetformer-ct-infonce
           poolformer poolformer-ct-cl poolformer-ct-infonce)
fi
device=${DEVICE:-auto}
sets=()
for kv in ${AERIALCT_SET:-}; do sets+=(--set "$kv"); done
configs=$(cd "$(dirname "$0")/../configs" && pwd)

json_get() {  # json_get FILE KEY: print one top-level value of a JSON file
  python3 -c 'import json, sys; v = json.load(open(sys.argv[1]))[sys.argv[2]]; print("" if v is None else v)' "$1" "$2"
}

mkdir -p "$out/runs" "$out/pred"
if [[ ! -f "$out/chips/index.gpkg" ]]; then
  # shellcheck disable=SC2086
  aerialct --quiet tile --dataset potsdam "$root" --out "$out/chips" ${TILE_ARGS:-} --json > "$out/tile.json"
fi

for preset in "${presets[@]}"; do
  run="$out/runs/$preset"
  if [[ ! -f "$run.train.json" ]]; then
    if [[ -f "$run/last.pt" ]]; then
      start=(--resume)   # killed mid-training: continue from its last checkpoint
    else
      start=(--config "$configs/$preset.yaml" --overwrite)  # nothing to keep yet
    fi
    aerialct --quiet train "${start[@]}" --data "$out/chips" --out "$run" \
      --device "$device" ${sets[@]+"${sets[@]}"} --json > "$run.train.json.tmp"
    mv "$run.train.json.tmp" "$run.train.json"
  fi
  ckpt=$(json_get "$run.train.json" best_checkpoint)
  [[ -n "$ckpt" ]] || ckpt=$(json_get "$run.train.json" last_checkpoint)
  if [[ ! -f "$run.eval.json" ]]; then
    aerialct --quiet predict "$ckpt" "$out"/chips/test/images/*.tif --out "$out/pred/$preset" \
      --device "$device" --skip-existing --json > "$out/pred/$preset.json"
    aerialct --quiet evaluate "$out/pred/$preset" --index "$out/chips" --split test \
      --report "$run.eval.json" --overwrite --json > /dev/null
  fi
done

python3 - "$out" "${presets[@]}" > "$out/results.md.tmp" <<'PY'
import json
import sys
from pathlib import Path

out, presets = Path(sys.argv[1]), sys.argv[2:]
rows = []
for p in presets:
    e = json.loads((out / "runs" / f"{p}.eval.json").read_text())
    per = e["per_class"]
    rows.append((p, e["mean_iou"], e["mean_f1"], e["overall_accuracy"], per.get("building", {}).get("iou")))
print("| preset | mean IoU | mean F1 | OA | building IoU |")
print("| --- | --- | --- | --- | --- |")
for p, miou, mf1, oa, b in rows:
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    print(f"| {p} | {fmt(miou)} | {fmt(mf1)} | {fmt(oa)} | {fmt(b)} |")
PY
mv "$out/results.md.tmp" "$out/results.md"
cat "$out/results.md"
