"""Predict road tiles with a model from `roadseg export`, using only onnxruntime and numpy.

    python examples/onnx_predict.py model.onnx data/cil-2022/test/images --out submission.csv

Reads 8-bit RGB(A) PNG tiles (a small decoder below, so nothing but numpy is needed),
predicts each tile alone, applies the decision stored in the model's metadata (pixel
threshold, then the 16x16 patch's road share) and writes a competition CSV
(id = <image number>_<x>_<y>, x the column). --tta averages the 8 flips/rotations and
uses the thresholds tuned for them. Nothing here imports roadseg, torch or PIL.
"""

import argparse
import json
import re
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import onnxruntime as ort

PATCH = 16


def _chunks(path):
    """(IHDR fields, the image data) of a PNG file."""
    data = Path(path).read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        sys.exit(f"{path}: not a PNG")
    pos, idat, header = 8, [], None
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos : pos + 4]), data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        pos += 12 + length
    return header, zlib.decompress(b"".join(idat))


def _unfilter(kind, row, prev, bpp):
    """One PNG scanline without its filter (None, Sub, Up, Average, Paeth)."""
    if kind == 0:
        return row
    if kind == 2:
        return (row + prev) & 255
    if kind == 1:  # a running sum per channel
        return np.cumsum(row.reshape(-1, bpp), axis=0).reshape(-1) & 255
    cur = row.copy()
    for x in range(len(row)):  # Average and Paeth: pixel by pixel
        a = cur[x - bpp] if x >= bpp else 0
        b, c = prev[x], (prev[x - bpp] if x >= bpp else 0)
        if kind == 3:
            cur[x] = (cur[x] + (a + b) // 2) & 255
        else:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            cur[x] = (cur[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    return cur


def read_png(path):
    """(H, W, C) uint8 of an 8-bit, non-interlaced RGB or RGBA PNG."""
    (width, height, depth, colour, _, _, interlace), data = _chunks(path)
    if depth != 8 or colour not in (2, 6) or interlace:
        sys.exit(f"{path}: only 8-bit RGB/RGBA PNGs without interlacing are read here")
    bpp = 3 if colour == 2 else 4
    raw = np.frombuffer(data, np.uint8).reshape(height, 1 + width * bpp)
    out = np.zeros((height, width * bpp), np.int32)
    prev = np.zeros(width * bpp, np.int32)
    for y in range(height):
        out[y] = prev = _unfilter(raw[y, 0], raw[y, 1:].astype(np.int32), prev, bpp)
    return out.reshape(height, width, bpp).astype(np.uint8)


def probability(session, image, tta):
    """(H, W) road probability of an (H, W, 3+) uint8 image."""
    x = np.ascontiguousarray(image[..., :3].transpose(2, 0, 1)[None], dtype=np.float32) / 255
    views = range(8) if tta else range(1)
    total = 0
    for k in views:
        v = np.rot90(x[..., ::-1] if k >= 4 else x, k % 4, axes=(2, 3))
        (p,) = session.run(["probability"], {"image": np.ascontiguousarray(v)})
        p = np.rot90(p, -(k % 4), axes=(2, 3))
        total = total + (p[..., ::-1] if k >= 4 else p)
    return total[0, 0] / len(views)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("tiles", help="folder of PNG tiles (satimage_<n>.png)")
    parser.add_argument("--out", required=True, help="CSV to write")
    parser.add_argument("--tta", action="store_true")
    args = parser.parse_args()

    session = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    decision = json.loads(meta["roadseg_decision_tta" if args.tta else "roadseg_decision"])
    print(f"decision from the metadata: pixel {decision['pixel']}, patch {decision['patch']}")
    if decision["close_gaps"] > 1 or decision["min_area"] > 1:
        print("note: the clean-up steps (close_gaps, min_area) are not applied here")
    rows = ["id,prediction"]
    tiles = sorted(
        Path(args.tiles).glob("*.png"), key=lambda p: int(re.findall(r"\d+", p.name)[-1])
    )
    for path in tiles:
        number = int(re.findall(r"\d+", path.name)[-1])
        road = probability(session, read_png(path), args.tta) > decision["pixel"]
        h, w = road.shape
        for x in range(0, w, PATCH):
            for y in range(0, h, PATCH):
                share = road[y : y + PATCH, x : x + PATCH].mean()
                rows.append(f"{number:03d}_{x}_{y},{int(share > decision['patch'])}")
    Path(args.out).write_text("\n".join(rows) + "\n")
    print(f"wrote {args.out}: {len(tiles)} tiles, {len(rows) - 1} patches")


if __name__ == "__main__":
    main()
