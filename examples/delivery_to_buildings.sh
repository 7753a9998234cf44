#!/usr/bin/env bash
# A new orthophoto delivery -> one building layer.
#
#   examples/delivery_to_buildings.sh CHECKPOINT SCENES_DIR OUT
#
# Predicts every GeoTIFF in SCENES_DIR (class raster + probabilities per scene),
# polygonises the buildings of each, and writes them to OUT/buildings.gpkg: one
# layer per CRS of the delivery, named building_epsg<code> (a delivery in one CRS
# has one layer; the `source` attribute names the scene's class raster). A scene
# that fails to predict is listed in OUT/failed.txt; the others go on, and the
# script exits with status 3 at the end when any scene failed.
#
# Idempotent and resumable: a rerun into the same OUT skips the scenes whose
# prediction is complete (predict --skip-existing) and rebuilds buildings.gpkg,
# which appears only when complete (built as buildings.incomplete.gpkg, then
# renamed), so a killed run never leaves a partial layer under the final name.
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
  --skip-existing --device "${DEVICE:-auto}" --json > "$out/predict.json" || status=$?
if [[ $status -ne 0 && $status -ne 3 ]]; then
  exit "$status"   # not a partial failure: nothing usable was produced
fi

# One line per scene: status, class raster, probability raster, layer, scene ("-" when
# absent: read collapses empty tab-separated fields). The layer is building_epsg<code> of
# the class raster's CRS.
python3 - "$out/predict.json" > "$out/scenes.tsv" <<'PY'
import json
import sys

import rasterio

for s in json.load(open(sys.argv[1]))["scenes"]:
    layer = "-"
    if s["status"] in ("ok", "skipped") and s["output"]:
        with rasterio.open(s["output"]) as ds:
            epsg = ds.crs.to_epsg() if ds.crs else None
        layer = f"building_epsg{epsg}" if epsg else "building_nocrs"
    print("\t".join([s["status"], s["output"] or "-", s["probabilities"] or "-", layer, s["scene"]]))
PY

: > "$out/failed.txt"
partial="$out/buildings.incomplete.gpkg"   # this script's own scratch file
rm -f "$partial"
regularize=()
[[ "${REGULARIZE:-0}" == 1 ]] && regularize=(--regularize)
while IFS=$'\t' read -r st classes probs layer scene; do
  if [[ "$st" == failed || "$classes" == - ]]; then
    echo "$scene" >> "$out/failed.txt"
    continue
  fi
  aerialct --quiet vectorize "$classes" --out "$partial" --append --layer "$layer" \
    --probabilities "$probs" --min-area "${MIN_AREA:-2}" --simplify "${SIMPLIFY:-0.1}" \
    ${regularize[@]+"${regularize[@]}"} --json > /dev/null
done < "$out/scenes.tsv"
rm -f "${partial%.gpkg}.stac.json"   # the scratch file's STAC Item; the scenes' are in classes/
if [[ -f "$partial" ]]; then
  mv -f "$partial" "$out/buildings.gpkg"
  echo "buildings: $out/buildings.gpkg"
fi
if [[ -s "$out/failed.txt" ]]; then
  echo "failed scenes (see $out/predict.json):" >&2
  cat "$out/failed.txt" >&2
  exit 3
fi
