#!/usr/bin/env bash
# A whole flight on Kubernetes: the two indexed Jobs of examples/flight_k8s.yaml, in order.
#
#   examples/flight_k8s.sh [MANIFEST]
#
# Applies the predict Job, waits until every index has completed, then applies the
# vectorize Job and waits for it: /data/out/buildings.gpkg on the shared volume. Kubernetes
# has no dependency between Jobs, hence this script. A Job that failed (a pod out of
# retries): delete it (kubectl delete job aerialct-predict) and run this script again;
# finished predictions and vectorize parts are kept.
#
# Environment: KUBECTL (default kubectl; e.g. "kubectl -n mapping"),
# TIMEOUT (how long to wait for each Job, default 24h).
set -euo pipefail

manifest=${1:-$(dirname "$(realpath "$0")")/flight_k8s.yaml}
read -r -a kubectl <<< "${KUBECTL:-kubectl}"
timeout=${TIMEOUT:-24h}
if [[ ! -f "$manifest" ]]; then
  echo "error: $manifest: no such manifest; give the path of flight_k8s.yaml" >&2
  exit 1
fi

for step in predict vectorize; do
  "${kubectl[@]}" apply -f "$manifest" -l "aerialct-step=$step"
  if ! "${kubectl[@]}" wait --for=condition=complete --timeout="$timeout" "job/aerialct-$step"; then
    echo "error: job aerialct-$step did not complete; see kubectl logs -l aerialct-step=$step" >&2
    exit 1
  fi
done
echo "buildings: /data/out/buildings.gpkg on the aerialct-data volume"
