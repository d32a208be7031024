#!/usr/bin/env bash
# Faults on Ray (#27): a Ray worker killed mid-scene, then the driver killed; the same
# command again predicts only what is missing, and the outputs equal an uninterrupted run.
#   benchmarks/ray_faults.sh SCENES_FOLDER CKPT [WORK_FOLDER]
set -euo pipefail
scenes=$1; ckpt=$2; work=${3:-$(mktemp -d)}
rs="${ROADSEG:-roadseg}"
common=(--ckpt "$ckpt" --output prob8 --chunk 512 --quiet)
rm -rf "$work/reference" "$work/faults"
echo "reference: one process, no faults"
$rs predict "$scenes" --out "$work/reference" "${common[@]}" | tail -1
echo "faulty run: --ray --workers 2"
$rs predict "$scenes" --out "$work/faults" "${common[@]}" --ray --workers 2 > "$work/faults.log" 2>&1 &
driver=$!
until compgen -G "$work/faults/*.parts/chunk_*.tif" > /dev/null; do sleep 0.2; done
victim=$(pgrep -f "ray::SceneWorker" | head -1)
echo "killing Ray worker $victim (SIGKILL) while a scene has $(ls "$work"/faults/*.parts/chunk_*.tif | wc -l) finished chunks"
kill -9 "$victim"
until [ "$(cat "$work"/faults/manifest.jsonl 2>/dev/null | wc -l)" -ge 6 ]; do sleep 0.2; done
echo "killing the driver (SIGKILL) after $(wc -l < "$work/faults/manifest.jsonl") scenes in the manifest"
kill -9 "$driver"; wait "$driver" || true
sleep 2; pkill -9 -f "ray::" || true
echo "the same command again"
$rs predict "$scenes" --out "$work/faults" "${common[@]}" --ray --workers 2 2>&1 | grep -E "to predict|scenes:"
same=0; total=0
for f in "$work"/reference/*.tif; do
  total=$((total + 1)); cmp -s "$f" "$work/faults/$(basename "$f")" && same=$((same + 1))
done
echo "outputs identical to the uninterrupted run: $same of $total"
grep -c '"done"' "$work/faults/manifest.jsonl" | sed 's/^/manifest lines "done": /'
