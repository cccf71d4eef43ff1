#!/usr/bin/env bash
# Builds every MetaBGM image from the repo root and, with --push, pushes them to your registry.
#   REGISTRY=registry.example.com/metabgm TAG=0.1.0 scripts/images.sh --push
# Then point your overlay at them (docs/operations.md, "Images"): kustomize's `images:` with
# newName $REGISTRY/<name> and newTag $TAG; compose reads METABGM_TAG (and builds them itself).
set -euo pipefail
cd "$(dirname "$0")/.."
registry="${REGISTRY:-metabgm}"
tag="${TAG:-0.1.0}"
push="${1:-}"
# image name | Dockerfile | build args
images=(
  "ingest|services/ingest/Dockerfile|"
  "narrator|services/narrator/Dockerfile|"
  "describer|services/describer/Dockerfile|"
  "gateway|services/gateway/Dockerfile|"
  "synth|services/synth/Dockerfile|RENDERER=musicgen"
  "synth-cpu|services/synth/Dockerfile|RENDERER=cpu"
  "llm|services/narrator/Dockerfile.llm|"
)
for entry in "${images[@]}"; do
  IFS='|' read -r name dockerfile arg <<<"$entry"
  ref="$registry/$name:$tag"
  docker build -f "$dockerfile" ${arg:+--build-arg "$arg"} -t "$ref" .
  if [ "$push" = "--push" ]; then docker push "$ref"; fi
done
