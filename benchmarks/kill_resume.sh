#!/usr/bin/env bash
# Kill one of two `roadseg predict --processes 2` workers mid-run, run the same command
# again, and compare the output with an uninterrupted run. Prints what happened.
#   benchmarks/kill_resume.sh SCENE.tif CKPT [OUT_DIR]
set -u
SCENE=$1 CKPT=$2 OUT=${3:-$(mktemp -d)}
mkdir -p "$OUT"
ROADSEG=${ROADSEG:-.venv/bin/roadseg}
ARGS=(--ckpt "$CKPT" --chunk 512 --processes 2 --quiet)
rm -rf "$OUT/killed.tif" "$OUT/killed.tif.parts" "$OUT/whole.tif"
"$ROADSEG" predict "$SCENE" --out "$OUT/killed.tif" "${ARGS[@]}" > "$OUT/killed.log" 2>&1 &
PARENT=$!
until [ "$(ls "$OUT/killed.tif.parts" 2>/dev/null | grep -c chunk_)" -ge 20 ]; do sleep 0.2; done
CHILD=$(pgrep -P "$PARENT" -f spawn_main | tail -1)
echo "finished chunks before the kill: $(ls "$OUT/killed.tif.parts" | grep -c chunk_); SIGKILL to worker $CHILD"
kill -9 "$CHILD"
wait "$PARENT"; echo "first run: exit $?: $(tail -1 "$OUT/killed.log")"
echo "chunks kept: $(ls "$OUT/killed.tif.parts" | grep -c chunk_)"
start=$(date +%s.%N)
"$ROADSEG" predict "$SCENE" --out "$OUT/killed.tif" "${ARGS[@]}" 2>&1 | grep -E "^process|^wrote"
echo "resumed in $(echo "$(date +%s.%N) - $start" | bc) s"
start=$(date +%s.%N)
"$ROADSEG" predict "$SCENE" --out "$OUT/whole.tif" "${ARGS[@]}" 2>&1 | grep -E "^process|^wrote"
echo "uninterrupted in $(echo "$(date +%s.%N) - $start" | bc) s"
"$(dirname "$ROADSEG")/python" -c "
import sys, numpy as np, rasterio
a, b = (rasterio.open(p).read() for p in sys.argv[1:])
print('killed and resumed == uninterrupted:', np.array_equal(a, b))" "$OUT/killed.tif" "$OUT/whole.tif"
