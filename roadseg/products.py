"""GIS-ready outputs of scene runs, made from the prediction rasters once they are done.

For every raster (one scene, or each scene of a folder run):

- a QGIS style beside it (:mod:`roadseg.styles`);
- with ``--vector``: the roads as centre lines, road surfaces as polygons, or both
  (:class:`VectorSpec`), each file with its own style. A folder run writes
  ``<id>-lines.gpkg`` and ``<id>-surfaces.gpkg`` (or ``.geojson``) beside ``<id>.tif``;
  each file records its identity (the raster's and every vector option,
  :meth:`VectorSpec.identity`), so a rerun writes again only what another raster or other
  options change.

For a folder run, at its end (:func:`run_products`: a run that is not a shard, or
``--merge-manifest``), from every listed scene that is done, whichever run did it:

- ``all-lines.gpkg`` / ``all-surfaces.gpkg``: one GeoPackage layer of every scene's
  vectors with a ``scene`` column, in ``--vector-crs``, else the scenes' CRS, else (scenes
  in several CRSs) WGS84;
- ``all-rasters.vrt``: the rasters as one mosaic (one VRT per CRS when the scenes are in
  several: ``all-rasters-EPSG_32632.vrt``, ...; :mod:`roadseg.vrt`);
- ``outputs.stac.json``: a STAC ItemCollection of the outputs (:mod:`roadseg.stac`).

Everything is written atomically; a style or VRT whose text is unchanged is not rewritten.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from roadseg.errors import RoadsegError

KINDS = {"lines": ("lines",), "surfaces": ("surfaces",), "both": ("lines", "surfaces")}
FORMATS = {"": ".gpkg", "gpkg": ".gpkg", ".gpkg": ".gpkg", "geojson": ".geojson",
           ".geojson": ".geojson"}  # fmt: skip
MOSAIC = "all-rasters"
MERGED = {"lines": "all-lines.gpkg", "surfaces": "all-surfaces.gpkg"}
STAC_FILE = "outputs.stac.json"
VECTOR_FORMAT = 1  # bump when the vectors written for the same identity change


@dataclass(frozen=True)
class VectorSpec:
    """Which vectors to write and how (``kind``: lines, surfaces or both; ``suffix``:
    ``.gpkg`` or ``.geojson`` for a folder run's files; ``crs``: as the user gave it)."""

    kind: str = "lines"
    suffix: str = ".gpkg"
    crs: str | None = None
    min_length: float = 10.0
    simplify: float = 1.0
    chunk: int = 2048
    quiet: bool = True

    @property
    def kinds(self) -> tuple[str, ...]:
        return KINDS[self.kind]

    def identity(self, raster: str | None, decision: str) -> str:
        """What the vectors of a raster (its identity tag) depend on, hashed."""
        from roadseg.identity import identity_hash

        return identity_hash({"raster": raster, "decision": decision, "crs": self.crs,
                              "min_length": self.min_length, "simplify": self.simplify,
                              "chunk": self.chunk, "format": VECTOR_FORMAT})  # fmt: skip


@dataclass(frozen=True)
class Done:
    """A scene whose raster is done: its id, where it was read from, its raster."""

    id: str
    source: str
    raster: Path


def vector_suffix(value: str) -> str | None:
    """The suffix a ``--vector`` value names as a format (none, ``gpkg``, ``geojson``);
    None when it is a file name."""
    return FORMATS.get(value.lower())


def scene_vector_paths(folder: Path, scene_id: str, spec: VectorSpec) -> dict[str, Path]:
    """A folder run's vector files of one scene: ``<id>-<kind><suffix>``."""
    return {kind: folder / f"{scene_id}-{kind}{spec.suffix}" for kind in spec.kinds}


def single_vector_paths(value: str, out: Path, spec: VectorSpec) -> dict[str, Path]:
    """One scene's vector files: ``value`` names the first kind's file (surfaces beside it
    as ``<stem>-surfaces``), or a format (none: GeoPackage) for ``<out stem>-<kind>``."""
    suffix = vector_suffix(value)
    if suffix is not None:
        return {kind: out.with_name(f"{out.stem}-{kind}{suffix}") for kind in spec.kinds}
    given = Path(value)
    paths = {spec.kinds[0]: given}
    if len(spec.kinds) > 1:
        paths["surfaces"] = given.with_name(f"{given.stem}-surfaces{given.suffix}")
    return paths


def raster_units(raster: str | Path) -> str:
    """``m`` or ``px``: the unit a raster's vectors are measured in."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    from roadseg.vectors import length_units, vector_transform

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(raster) as src:
            crs, transform = src.crs, src.transform
    return length_units(crs, vector_transform(crs, transform)).unit


def write_raster_vectors(raster: str | Path, paths: dict[str, Path], spec: VectorSpec, *,
                         threshold: float, clean=None, identity: str | None = None,
                         unstyled=frozenset()) -> tuple[list[str], object]:  # fmt: skip
    """Write the vectors of ``raster`` to ``paths`` (kind -> file) with their styles (but
    those of the files in ``unstyled``); returns a line per file and the lines' frame in
    the raster's CRS (None without lines), to draw."""
    from roadseg.styles import write_vector_style
    from roadseg.vectorfiles import parse_crs

    crs, said, lines = parse_crs(spec.crs), [], None
    for kind, path in paths.items():
        make = _lines if kind == "lines" else _surfaces
        frame, text = make(raster, spec, threshold, clean)
        written = _write(frame, path, crs, identity, kind)
        where = "" if written.crs == frame.crs else f" (written in {_label(written.crs)})"
        said.append(f"wrote {path}: {text}{where}")
        if path not in unstyled:
            write_vector_style(path, kind, frame.attrs.get("units", "m").rstrip("²"))
        lines = frame if kind == "lines" else lines
    return said, lines


def _lines(raster, spec: VectorSpec, threshold: float, clean):
    from roadseg.vectors import describe, to_frame, vectorize_raster

    pieces, crs, transform = vectorize_raster(
        raster, threshold=threshold, chunk=spec.chunk, min_length=spec.min_length,
        simplify=spec.simplify, progress=not spec.quiet, clean=clean,
    )  # fmt: skip
    frame = to_frame(pieces, crs, transform)
    return frame, describe(frame)


def _surfaces(raster, spec: VectorSpec, threshold: float, clean):
    from roadseg.surfaces import describe_surfaces, surface_polygons, surfaces_frame

    polygons, crs, transform = surface_polygons(raster, threshold=threshold, chunk=spec.chunk,
                                                clean=clean, progress=not spec.quiet)  # fmt: skip
    frame = surfaces_frame(polygons, crs, transform)
    return frame, describe_surfaces(frame)


def _write(frame, path: Path, crs, identity: str | None, kind: str):
    from roadseg.vectorfiles import write_frame

    geometry = "LineString" if kind == "lines" else "Polygon"
    return write_frame(frame, path, crs=crs, identity=identity, geometry_type=geometry)


def _label(crs) -> str:
    from roadseg.ground import crs_label

    return crs_label(crs) if crs is not None else "pixels"


def check_names(scene_ids: list[str], spec: VectorSpec | None) -> None:
    """Refuse, before any work, a scene whose outputs would share a file or a style (QGIS
    loads ``<stem>.qml``) with another output of the folder: a scene's vectors, or the
    run's mosaic and merged layers."""
    owners = {MOSAIC: "the run's mosaic (VRT)"}
    owners.update({Path(name).stem: f"the run's merged {kind}" for kind, name in MERGED.items()})
    stems = [(scene, scene, "raster") for scene in scene_ids]
    if spec is not None:
        stems += [(f"{scene}-{kind}", scene, kind) for scene in scene_ids for kind in spec.kinds]
    for stem, scene, what in stems:
        if stem in owners or stem.startswith(f"{MOSAIC}-"):
            other = owners.get(stem, "the run's mosaics (VRT)")
            raise RoadsegError(
                f"scene {scene!r}: its {what} would share the style {stem}.qml with {other}; "
                "rename the scene (or predict it into another folder)"
            )
        owners[stem] = f"scene {scene!r}'s {what}"


def gis_outputs(options, out: Path, rows: dict, scenes: list, mine: list, *, output: str,
                vectors: VectorSpec | None, final: bool, failed: list) -> None:  # fmt: skip
    """The GIS outputs of a folder run's done scenes (``rows``: the manifest's latest line
    per scene id): this shard's (``mine``) styles and vectors, a scene whose vectors fail
    added to ``failed``; with ``final``, the merged layers, mosaic and STAC ItemCollection
    of every listed scene done (``scenes``)."""
    import sys

    def done(listed: list) -> list[Done]:
        targets = [(scene, out / f"{scene.id}.tif") for scene in listed]
        return [Done(scene.id, scene.path, target) for scene, target in targets
                if rows.get(scene.id, {}).get("status") == "done" and target.is_file()]  # fmt: skip

    mine = done(mine)
    written, failures = scene_products(mine, vectors, options, output)
    for scene_id, error in failures:
        failed.append(scene_id)
        print(f"{scene_id}: vectors failed: {error}", file=sys.stderr, flush=True)
    if vectors is not None:
        print(f"vectors ({vectors.kind}): {written} scenes written, "
              f"{len(mine) - written - len(failures)} current before")  # fmt: skip
    if final:
        for line in run_products(out, done(scenes), vectors, options, output):
            print(line)


def scene_products(done: list[Done], spec: VectorSpec | None, options, output: str):
    """Each done scene's style, and with ``spec`` its vectors (those not current); returns
    how many scenes' vectors were written and ``(scene id, one-line error)`` of each scene
    whose vectors failed (the others go on)."""
    from roadseg.styles import write_raster_style

    base = options.output_decision() if spec else None
    imagery = options.imagery() if spec and done else None
    written, failures = 0, []
    for scene in done:
        write_raster_style(scene.raster, output)
        if spec is None:
            continue
        try:
            written += _scene_vectors(scene, spec, options, output, base, imagery)
        except Exception as err:  # noqa: BLE001 - one scene's failure, whatever it is
            failures.append((scene.id, _failure(err, scene.raster)))
    return written, failures


def _failure(err: Exception, path: Path) -> str:
    """One line saying why, naming the file."""
    from roadseg.console import one_line

    line = one_line(err)
    return line if isinstance(err, RoadsegError) else f"{path}: {type(err).__name__}: {line}"


def _scene_vectors(scene: Done, spec: VectorSpec, options, output: str, base, imagery) -> bool:
    """Write a scene's vectors unless they are current; whether they were written."""
    from roadseg.parts import output_identity
    from roadseg.scenes import scene_decision
    from roadseg.styles import write_vector_style
    from roadseg.vectorfiles import file_identity

    paths = scene_vector_paths(scene.raster.parent, scene.id, spec)
    want = spec.identity(output_identity(scene.raster), base.describe())
    stale = {kind: path for kind, path in paths.items() if file_identity(path) != want}
    if not stale:
        units = raster_units(scene.raster)
        for kind, path in paths.items():  # a style removed since is written again
            write_vector_style(path, kind, units)
        return False
    decision = scene_decision(options, str(scene.raster), base, imagery=imagery)
    clean = decision.clean if output != "mask" and decision.postprocessing else None
    write_raster_vectors(scene.raster, stale, spec, threshold=decision.pixel, clean=clean,
                         identity=want)  # fmt: skip
    return True


def run_products(folder: Path, done: list[Done], spec: VectorSpec | None, options,
                 output: str) -> list[str]:  # fmt: skip
    """The run's merged layers (with ``spec``), mosaic and STAC ItemCollection from every
    done scene; returns the lines that say what was written."""
    from roadseg.stac import Entry, write_item_collection

    said, vectors = [], {}
    decision = options.output_decision().describe()
    if spec is not None:
        current = _current_vectors(done, spec, decision)
        said += merge_vectors(folder, done, current, spec)
        said += _stale_vectors(folder, done, spec)
        vectors = current
    said += mosaic(folder, [scene.raster for scene in done], output)
    entries = [Entry(s.id, s.source, s.raster, vectors.get(s.id, {}), decision) for s in done]
    path = folder / STAC_FILE
    count = write_item_collection(path, entries)
    said.append(f"wrote {path}: a STAC ItemCollection of {count} scene"
                f"{'s' if count != 1 else ''}' outputs")  # fmt: skip
    return said


def _stale_vectors(folder: Path, done: list[Done], spec: VectorSpec) -> list[str]:
    """Vector files an earlier run wrote with other ``--vector``/``--vector-kind`` options,
    named (not this run's, not in its STAC), never removed: a file roadseg wrote may have
    been edited since (a GIS keeps its identity tag)."""
    from roadseg.vectorfiles import file_identity

    stale = []
    for scene in done:
        current = set(scene_vector_paths(folder, scene.id, spec).values())
        for kind in MERGED:
            for suffix in sorted(set(FORMATS.values())):
                path = folder / f"{scene.id}-{kind}{suffix}"
                if path not in current and file_identity(path) is not None:
                    stale.append(path.name)
    stale += [name for kind, name in MERGED.items()
              if kind not in spec.kinds and (folder / name).is_file()]  # fmt: skip
    if not stale:
        return []
    shown = ", ".join(stale[:4]) + (f" and {len(stale) - 4} more" if len(stale) > 4 else "")
    return [f"{len(stale)} vector files in {folder} are from an earlier run with other vector "
            f"options, not this run's (not in its STAC): {shown}; delete them if not wanted"]  # fmt: skip


def _current_vectors(done: list[Done], spec: VectorSpec, decision: str) -> dict:
    """Scene id -> its vector files (kind -> path) that are of its current raster."""
    from roadseg.parts import output_identity
    from roadseg.vectorfiles import file_identity

    current = {}
    for scene in done:
        want = spec.identity(output_identity(scene.raster), decision)
        paths = scene_vector_paths(scene.raster.parent, scene.id, spec)
        files = {kind: path for kind, path in paths.items() if file_identity(path) == want}
        if files:
            current[scene.id] = files
    return current


def merged_crs(rasters: list[Path], spec: VectorSpec) -> tuple[object, str]:
    """The CRS of the merged layers and why: ``--vector-crs``; else the scenes' one CRS;
    else WGS84 (scenes in several CRSs); None when no scene has a CRS."""
    import rasterio

    from roadseg.vectorfiles import WGS84, parse_crs

    if spec.crs is not None:
        return parse_crs(spec.crs), "--vector-crs"
    crss = []
    for raster in rasters:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with rasterio.open(raster) as src:
                crs = src.crs
            if crs is not None and crs not in crss:
                crss.append(crs)
    if len(crss) > 1:
        return parse_crs(WGS84), f"the scenes are in {len(crss)} CRSs"
    return (crss[0], "the scenes' CRS") if crss else (None, "no scene has a CRS")


def merge_vectors(folder: Path, done: list[Done], current: dict, spec: VectorSpec) -> list[str]:
    """``all-lines.gpkg`` / ``all-surfaces.gpkg`` of the scenes' current vector files."""
    from roadseg.styles import write_vector_style
    from roadseg.vectorfiles import merge_files

    crs, why = merged_crs([scene.raster for scene in done], spec)
    said = []
    for kind in spec.kinds:
        files = [(s.id, current[s.id][kind]) for s in done if kind in current.get(s.id, {})]
        path = folder / MERGED[kind]
        count, left_out = merge_files(files, path, crs, kind=kind)
        write_vector_style(path, kind, "m" if crs is not None else "px")
        missing = len(done) - len(files)
        said.append(
            f"wrote {path}: {count} {kind} of {len(files) - len(left_out)} scenes in one layer "
            f"with their scene ids, in {_label(crs)} ({why})"
            + (f"; {missing} done scenes have no current {kind} yet" if missing else "")
            + (f"; left out, without a CRS: {', '.join(left_out[:3])}" if left_out else "")
        )
    return said


def mosaic(folder: Path, rasters: list[Path], output: str) -> list[str]:
    """The rasters as one VRT per CRS, each with its style; lines saying what was written."""
    from roadseg.styles import write_raster_style
    from roadseg.vrt import check_vrt, write_vrts

    vrts, left_out = write_vrts(folder, rasters, MOSAIC)
    for vrt in vrts:
        check_vrt(vrt)
        write_raster_style(vrt, output)
    if not vrts:
        said = []
    elif len(vrts) == 1:
        said = [f"wrote {vrts[0]}: a mosaic (VRT) of {len(rasters) - len(left_out)} rasters"]
    else:
        names = ", ".join(v.name for v in vrts)
        said = [f"wrote {len(vrts)} mosaics (VRT), one per CRS (a VRT holds one): {names}"]
    return said + [f"left out of the mosaic: {why}" for why in left_out]
