"""Ground resolution matters: a competition model on the Massachusetts tiles (1 m per pixel)
read as they are, and resampled to the model's resolution by factors around it.

    python benchmarks/resolution.py --ckpt runs/cpu/checkpoints/best.ckpt

writes the 100 tiles of data/massachusetts-400 as GeoTIFFs with their real 1 m pixels
(EPSG:26986, Massachusetts Mainland, laid side by side: the crops' true places are not
published) under --work, then runs ``roadseg evaluate --data`` on them once per row, and
prints the table. The row "auto" is what a user gets with no flag.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

ROWS = [  # (row name, --resolution given, i.e. what the scene's pixels are taken to be)
    ("as they are (1 m read as the model's 0.5 m)", "native"),
    ("resampled x1.5", "0.75"),
    ("resampled x2: auto, no flag (1 m -> the model's 0.5 m)", None),
    ("resampled x2.5", "1.25"),
]


def write_geotiffs(src: Path, out: Path, metres: float = 1.0) -> int:
    """The labelled tiles of ``src`` (images/, groundtruth/) as GeoTIFFs of ``metres`` pixels."""
    n = 0
    for kind in ("images", "groundtruth"):
        (out / kind).mkdir(parents=True, exist_ok=True)
        for k, path in enumerate(sorted((src / kind).glob("*.png"))):
            with rasterio.open(path) as s:
                data = s.read()
            x0, y0 = 230000 + (k % 10) * 400 * metres, 905000 - (k // 10) * 400 * metres
            profile = {
                "driver": "GTiff",
                "width": data.shape[2],
                "height": data.shape[1],
                "count": data.shape[0],
                "dtype": data.dtype,
                "crs": "EPSG:26986",
                "transform": from_origin(x0, y0, metres, metres),
                "compress": "deflate",
            }
            with rasterio.open(out / kind / f"{path.stem}.tif", "w", **profile) as d:
                d.write(data)
            n += kind == "images"
    return n


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--ckpt", default="runs/cpu/checkpoints/best.ckpt")
    p.add_argument("--data", default="data/massachusetts-400")
    p.add_argument("--work", default="runs/massachusetts-1m")
    args = p.parse_args()
    work = Path(args.work)
    n = write_geotiffs(Path(args.data), work)
    print(f"{n} tiles of {args.data} written as 1 m GeoTIFFs under {work}", flush=True)
    table = []
    for name, resolution in ROWS:
        cmd = [
            sys.executable,
            "-m",
            "roadseg",
            "evaluate",
            "--ckpt",
            args.ckpt,
            "--data",
            str(work),
            "--out",
            str(work / "predicted.csv"),
            "--quiet",
        ]
        if resolution:
            cmd += ["--resolution", resolution]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            sys.exit(out.stderr)
        text = out.stdout

        def find(pattern: str, text: str = text) -> float:
            return float(re.search(pattern, text).group(1))

        table.append(
            (
                name,
                find(r"road patch F1 \(the course's score\)\s+([\d.]+)"),
                find(r"pixel road F1: ([\d.]+)"),
                find(r"patch accuracy \(the [^)]*\)\s+([\d.]+)"),
            )
        )
        reading = [line for line in text.splitlines() if "resolution:" in line]
        print(f"{name}: {reading[0].split(': ', 1)[1] if reading else ''}", flush=True)
    print(f"\n{args.ckpt} on the {n} Massachusetts tiles (1 m), scored on their own grid\n")
    print("| tiles fed to the network | patch road F1 | pixel road F1 | patch accuracy |")
    print("|---|---:|---:|---:|")
    for name, f1, pixel, acc in table:
        print(f"| {name} | {f1:.3f} | {pixel:.3f} | {acc:.3f} |")
    best = max(table, key=lambda row: row[1])
    print(f"\nbest: {best[0]} ({np.round(best[1], 3)})")


if __name__ == "__main__":
    main()
