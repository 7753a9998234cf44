#!/usr/bin/env bash
# A new orthophoto delivery -> one building layer.
#
#   examples/delivery_to_buildings.sh CHECKPOINT SCENES_DIR OUT
#
# Predicts every GeoTIFF in SCENES_DIR (class raster + probabilities per scene),
# polygonises the buildings of each, and appends them to OUT/buildings.gpkg
# (one layer "building"; the `source` attribute names the scene). A scene that
# fails to predict is listed in OUT/failed.txt; the others go on, and the script
# exits with status 3 at the end when any scene failed.
#
# Environment: DEVICE (default auto), MIN_AREA (m², default 2), SIMPLIFY (m, default 0.1),
# REGULARIZE=1 for right-angled outlines.
set -euo pipefail

if [[ $# -ne 3 ]]; then
  echo "usage: $0 CHECKPOINT SCENES_DIR OUT" >&2
  exit 2
fi
ckpt=$1
scenes=$2
out=$3
mkdir -p "$out"
shopt -s nullglob
inputs=("$scenes"/*.tif "$scenes"/*.tiff)
if [[ ${#inputs[@]} -eq 0 ]]; then
  echo "error: $scenes: no .tif scenes found; give a folder of GeoTIFFs" >&2
  exit 1
fi

status=0
aerialct --quiet predict "$ckpt" "${inputs[@]}" --out "$out/classes" --probabilities \
  --device "${DEVICE:-auto}" --json > "$out/predict.json" || status=$?
if [[ $status -ne 0 && $status -ne 3 ]]; then
  exit "$status"   # not a partial failure: nothing usable was produced
fi

# One line per scene: status, class raster, probability raster, scene ("-" when absent:
# read collapses empty tab-separated fields).
python3 - "$out/predict.json" > "$out/scenes.tsv" <<'PY'
import json
import sys

for s in json.load(open(sys.argv[1]))["scenes"]:
    print("\t".join([s["status"], s["output"] or "-", s["probabilities"] or "-", s["scene"]]))
PY

: > "$out/failed.txt"
rm -f "$out/buildings.gpkg"
regularize=()
[[ "${REGULARIZE:-0}" == 1 ]] && regularize=(--regularize)
while IFS=$'\t' read -r st classes probs scene; do
  if [[ "$st" != ok ]]; then
    echo "$scene" >> "$out/failed.txt"
    continue
  fi
  aerialct --quiet vectorize "$classes" --out "$out/buildings.gpkg" --append \
    --probabilities "$probs" --min-area "${MIN_AREA:-2}" --simplify "${SIMPLIFY:-0.1}" \
    ${regularize[@]+"${regularize[@]}"} --json > /dev/null
done < "$out/scenes.tsv"

echo "buildings: $out/buildings.gpkg"
if [[ -s "$out/failed.txt" ]]; then
  echo "failed scenes (see $out/predict.json):" >&2
  cat "$out/failed.txt" >&2
  exit 3
fi
