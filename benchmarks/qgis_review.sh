#!/usr/bin/env bash
# The picture a reviewer sees: `aerialct demo`'s review layers (tp green, fp red, fn blue),
# opened by QGIS with the styles stored in review.gpkg, drawn over the held-out scene.
#   benchmarks/qgis_review.sh [DEMO_DIR]     (default: a fresh demo run in a temporary folder)
# Needs QGIS's Python (Debian/Ubuntu: apt-get install python3-qgis) at /usr/bin/python3.
# Writes benchmarks/qgis_review.png and prints the STAC Item of the prediction.
set -euo pipefail
cd "$(dirname "$0")/.."
demo="${1:-}"
if [[ -z "$demo" ]]; then
  demo="$(mktemp -d)/demo-run"
  aerialct demo --out "$demo" --device cpu
fi
QT_QPA_PLATFORM=offscreen /usr/bin/python3 tests/qgis_check.py "$demo/review.gpkg" \
  --render benchmarks/qgis_review.png --scene "$demo/data/heldout.tif" --size 640
python3 -m json.tool "$demo/prediction/heldout.stac.json"
