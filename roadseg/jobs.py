"""Many scenes: scene lists, a manifest that makes reruns cheap, shards for array jobs, Ray.

``roadseg predict a.tif b.tif --out roads/`` (or a folder, a text file of paths, a STAC
Item or ItemCollection) predicts each scene into ``roads/<scene id>.tif`` with one model
loaded once. The output folder keeps

- ``run.json``: what the outputs are made with (models, options, output kind); a run with
  other models or options is refused instead of mixed in;
- ``manifest[.shard-I-of-N].jsonl``: one line per finished or failed scene (scene, id,
  output, status, seconds, finished), appended as scenes finish, so a killed run loses
  nothing: the same command again skips what is done, resumes what is half done (its
  chunks in ``<output>.parts/``) and redoes what failed;
- ``manifest.csv``: every shard's lines merged (``--merge-manifest``, or at the end of a
  run that is not a shard), one row per scene, its latest status.

``--shard I/N`` takes scenes I, I+N, I+2N, ... (1-based) of the list sorted by id, so
Slurm arrays, AWS Batch array jobs and Kubernetes indexed jobs need nothing more
(``--shard $((SLURM_ARRAY_TASK_ID))/$SLURM_ARRAY_TASK_COUNT``). ``--ray [ADDRESS]`` runs
the scenes as tasks on Ray actors that load the model once (a scene of at least two
chunks per worker is split into one task per worker, each every N-th chunk, merged by the
driver); Ray retries the task of a killed worker (which resumes from its finished chunks),
and a killed driver is resumed from the manifest (:func:`run_ray`).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from roadseg.errors import RoadsegError
from roadseg.io import atomic_path

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".png", ".img")
MANIFEST_FIELDS = ("id", "scene", "output", "status", "seconds", "finished", "error")


@dataclass(frozen=True)
class Scene:
    """One scene of a list: its id (output name) and where it is read from."""

    id: str
    path: str


def _stac_scenes(path: Path, asset: str | None) -> list[Scene]:
    """The scenes of a STAC Item or ItemCollection (a FeatureCollection of Items)."""
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RoadsegError(f"not JSON ({err})", path) from err
    items = doc.get("features", []) if doc.get("type") == "FeatureCollection" else [doc]
    if not items or any(i.get("type") != "Feature" or "assets" not in i for i in items):
        raise RoadsegError("not a STAC Item or ItemCollection (Features with assets)", path)
    scenes = []
    for item in items:
        assets = item["assets"]
        key = asset or next(
            (k for k, a in assets.items() if "geotiff" in str(a.get("type", "")).lower()), None
        )
        if key not in assets:
            raise RoadsegError(
                f"item {item.get('id')!r} has no asset {key!r}; its assets: "
                f"{', '.join(assets)} (choose one with --asset KEY)",
                path,
            )
        href = assets[key]["href"]
        local = href if "://" in href or href.startswith("/") else str(path.parent / href)
        scenes.append(Scene(str(item.get("id") or Path(href).stem), local))
    return scenes


def scene_list(specs: list[str], asset: str | None = None) -> list[Scene]:
    """The scenes of ``specs``: raster paths, folders (their rasters), text files (a path
    per line, relative to the file; ``#`` comments) and STAC JSON; sorted by id, each id
    once."""
    scenes: list[Scene] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in RASTER_SUFFIXES)
            if not found:
                raise RoadsegError(
                    f"no rasters ({', '.join(RASTER_SUFFIXES)}) in this folder", path
                )
            scenes += [Scene(p.stem, str(p)) for p in found]
        elif path.suffix.lower() == ".txt":
            lines = [ln.strip() for ln in path.read_text().splitlines()]
            for line in (ln for ln in lines if ln and not ln.startswith("#")):
                p = Path(line) if Path(line).is_absolute() or "://" in line else path.parent / line
                scenes.append(Scene(Path(line).stem, str(p)))
        elif path.suffix.lower() == ".json":
            scenes += _stac_scenes(path, asset)
        else:
            scenes.append(Scene(path.stem, str(path)))
    by_id: dict[str, Scene] = {}
    for scene in scenes:
        if scene.id in by_id and by_id[scene.id].path != scene.path:
            raise RoadsegError(
                f"two scenes would write {scene.id}.tif: {by_id[scene.id].path} and "
                f"{scene.path}; rename one, or list them in separate runs"
            )
        by_id[scene.id] = scene
    return [by_id[k] for k in sorted(by_id)]


def parse_shard(text: str | None) -> tuple[int, int]:
    """``I/N`` (1-based) -> (I, N); None -> (1, 1)."""
    if text is None:
        return 1, 1
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        i = n = 0
    if not 1 <= i <= n:
        raise RoadsegError(f"--shard must be I/N with 1 <= I <= N, got {text!r}")
    return i, n


def shard(scenes: list[Scene], i: int, n: int) -> list[Scene]:
    """Scene I, I+N, I+2N, ... of the list (1-based): a deterministic share."""
    return scenes[i - 1 :: n]


def manifest_path(out: Path, i: int, n: int) -> Path:
    return out / ("manifest.jsonl" if n == 1 else f"manifest.shard-{i}-of-{n}.jsonl")


def start_run(out: Path, key: dict) -> str:
    """``out/run.json`` with the run key (written once); refused when it says another run.
    Returns the key's short hash, recorded on each manifest line."""
    text = json.dumps(key, indent=2, sort_keys=True) + "\n"
    stamp = out / "run.json"
    if stamp.is_file() and stamp.read_text() != text:
        raise RoadsegError(
            "holds the outputs of another run (other models, options or output kind; see "
            "its run.json): write to another folder, or delete it",
            out,
        )
    if not stamp.is_file():
        with atomic_path(stamp) as tmp:
            tmp.write_text(text)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def read_manifests(out: Path) -> dict[str, dict]:
    """Latest line per scene id over every manifest of ``out`` (a torn last line from a
    killed run is skipped)."""
    rows: dict[str, dict] = {}
    for path in sorted(out.glob("manifest*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if row["id"] not in rows or row["finished"] >= rows[row["id"]]["finished"]:
                rows[row["id"]] = row
    return rows


def merge_manifest(out: Path, scenes: list[Scene] | None = None) -> tuple[Path, dict[str, int]]:
    """``out/manifest.csv`` from every shard's manifest (scenes of ``scenes`` not yet done
    listed as missing); returns it and the count per status."""
    rows = read_manifests(out)
    for scene in scenes or []:
        rows.setdefault(scene.id, {"id": scene.id, "scene": scene.path, "status": "missing"})
    path = out / "manifest.csv"
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=MANIFEST_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for key in sorted(rows):
            writer.writerow(rows[key])
    counts: dict[str, int] = {}
    for row in rows.values():
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return path, counts


@dataclass(frozen=True)
class SceneJob:
    """One scene to predict, as a worker receives it (picklable)."""

    scene: Scene
    out: str
    output: str
    chunk: int
    cog: bool


def plan(
    scenes: list[Scene], out: Path, output: str, chunk: int, cog: bool
) -> tuple[list[SceneJob], int]:
    """(jobs of the scenes not done yet, how many are done): a scene is done when its
    manifest line says so and its output is there."""
    done = {k for k, r in read_manifests(out).items() if r["status"] == "done"}
    jobs, skipped = [], 0
    for scene in scenes:
        target = out / f"{scene.id}.tif"
        if scene.id in done and target.is_file():
            skipped += 1
            continue
        jobs.append(SceneJob(scene, str(target), output, chunk, cog))
    return jobs, skipped


def record(manifest: Path, job: SceneJob, status: str, seconds: float, error: str = "") -> None:
    """Append one scene's line (one write: a kill leaves at most a torn last line)."""
    row = {"id": job.scene.id, "scene": job.scene.path, "output": job.out, "status": status,
           "seconds": round(seconds, 2), "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
           "error": error}  # fmt: skip
    with open(manifest, "a") as f:
        f.write(json.dumps(row) + "\n")


def predict_one(
    predictor, decision, options, job: SceneJob, rank: int = 0, world: int = 1
) -> float:
    """One scene of a list with a loaded predictor (or its ``rank``-th share of ``world``,
    left unmerged); returns its seconds."""
    start = time.perf_counter()
    predictor.predict_scene(
        job.scene.path, job.out, output=job.output, decision=decision, chunk=job.chunk,
        run_key=options.run_key(), read=options.read_options(), cog=job.cog,
        rank=rank, world=world, merge=world == 1,
    )  # fmt: skip
    return time.perf_counter() - start


@dataclass
class Progress:
    """Scenes done, time left, and the summary line."""

    total: int
    skipped: int
    start: float = dataclasses.field(default_factory=time.perf_counter)
    done: int = 0
    failed: int = 0

    def line(self, job: SceneJob, seconds: float, error: str = "") -> str:
        finished = self.done + self.failed
        elapsed = time.perf_counter() - self.start
        left = elapsed / finished * (self.total - finished)
        what = f"failed: {error}" if error else f"{seconds:.1f} s"
        return (f"[{finished}/{self.total}] {job.scene.id}: {what}; "
                f"{elapsed:.0f} s so far, about {left:.0f} s left")  # fmt: skip

    def summary(self) -> str:
        elapsed = time.perf_counter() - self.start
        rate = self.done / elapsed * 3600 if elapsed and self.done else 0.0
        return (f"{self.done + self.skipped + self.failed} scenes: {self.done} predicted, "
                f"{self.skipped} done before (skipped), {self.failed} failed, in {elapsed:.0f} s "
                f"({rate:.0f} scenes/hour)")  # fmt: skip


def run_local(options, jobs: list[SceneJob], manifest: Path, progress: Progress) -> None:
    """Every job in this process, one model loaded once; a scene that fails on bad input
    is recorded and the next one runs."""
    import dataclasses as dc

    predictor, decision = dc.replace(options, quiet=True).predictor()
    for job in jobs:
        try:
            _finish(manifest, progress, job, predict_one(predictor, decision, options, job), "")
        except RoadsegError as err:
            _finish(manifest, progress, job, 0.0, str(err))


def run_ray(options, jobs: list[SceneJob], manifest: Path, progress: Progress, *,
            address: str | None, workers: int) -> None:  # fmt: skip
    """The jobs as tasks on ``workers`` Ray actors that each load the model once (threads:
    the cores shared out). A worker that dies is restarted and its task retried by Ray
    (the scene resumes from its finished chunks); the manifest is written here, by the
    driver, as results come back."""
    try:
        import ray
        from ray.util import ActorPool
    except ImportError as err:
        raise RoadsegError("--ray needs Ray: pip install 'roadseg[ray]'") from err
    import os

    cores = os.cpu_count() or 1
    threads = max(1, cores // workers)
    started = not ray.is_initialized()
    ray.init(address=address, ignore_reinit_error=True, include_dashboard=False,
             log_to_driver=False, **({} if address else {"num_cpus": workers * threads}))  # fmt: skip
    try:
        _ray_jobs(ray, ActorPool, options, jobs, manifest, progress, workers, threads)
    finally:
        if started:
            ray.shutdown()


def _ray_jobs(ray, pool_class, options, jobs, manifest, progress, workers, threads) -> None:
    # restarted without limit: a killed worker's task is retried on its restarted actor
    worker_class = ray.remote(num_cpus=threads, max_restarts=-1, max_task_retries=-1)(SceneWorker)
    pool = pool_class([worker_class.remote(options, threads) for _ in range(workers)])
    imagery = options.imagery()
    shares = {job.out: _shares(options, imagery, job, workers) for job in jobs}
    tasks = [(job, rank, shares[job.out]) for job in jobs for rank in range(shares[job.out])]
    left, spent = dict(shares), {}
    for job, seconds, error in pool.map_unordered(lambda a, t: a.predict.remote(*t), tasks):
        if left.get(job.out, 0) == 0:
            continue  # a share of a scene that already failed
        spent[job.out] = spent.get(job.out, 0.0) + seconds
        left[job.out] = 0 if error else left[job.out] - 1
        if not error and left[job.out] == 0 and shares[job.out] > 1:
            error = _merge_shares(options, imagery, job)
        if error or left[job.out] == 0:
            _finish(manifest, progress, job, spent[job.out], error)


def _shares(options, imagery, job: SceneJob, workers: int) -> int:
    """Tasks a scene is split into: one, or one per worker for a scene of at least two
    chunks per worker (each predicts every N-th chunk; the driver merges)."""
    import warnings

    import rasterio

    from roadseg.parts import scene_chunks
    from roadseg.scenes import scene_chunk_side

    if workers < 2:
        return 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        try:
            with rasterio.open(job.scene.path) as src:
                side = scene_chunk_side(options, src, job.chunk, imagery)
                chunks = len(scene_chunks(src.width, src.height, side))
        except (rasterio.errors.RasterioIOError, RoadsegError):
            return 1  # the task reports the error
    return workers if chunks >= 2 * workers else 1


def _merge_shares(options, imagery, job: SceneJob) -> str:
    """Merge a scene predicted in shares; the error said in one line, or ""."""
    from roadseg.scenes import merge_scene

    try:
        merge_scene(options, job.scene.path, job.out, output=job.output, chunk=job.chunk,
                    cog=job.cog, imagery=imagery)  # fmt: skip
    except RoadsegError as err:
        return str(err)
    return ""


def _finish(manifest: Path, progress: Progress, job: SceneJob, seconds: float, error: str) -> None:
    if error:
        progress.failed += 1
        record(manifest, job, "failed", 0.0, error)
        print(progress.line(job, 0.0, error), file=sys.stderr, flush=True)
    else:
        progress.done += 1
        record(manifest, job, "done", seconds)
        print(progress.line(job, seconds), flush=True)


class SceneWorker:
    """A Ray actor: the model loaded once, scenes predicted one after another."""

    def __init__(self, options, threads: int):
        import dataclasses as dc

        import torch

        torch.set_num_threads(threads)
        self.options = dc.replace(options, quiet=True)
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):
            self.predictor, self.decision = self.options.predictor()

    def pid(self) -> int:
        import os

        return os.getpid()

    def predict(self, job: SceneJob, rank: int = 0, world: int = 1) -> tuple[SceneJob, float, str]:
        """A scene, or with ``world`` > 1 its ``rank``-th share of chunks (not merged)."""
        import contextlib
        import io

        try:
            with contextlib.redirect_stdout(io.StringIO()):
                seconds = predict_one(self.predictor, self.decision, self.options, job, rank, world)
                return job, seconds, ""
        except RoadsegError as err:
            return job, 0.0, str(err)


def predict_many(
    options, specs: list[str], out: str | Path, *, output: str = "prob", chunk: int = 2048,
    cog: bool = False, asset: str | None = None, shard_spec: str | None = None,
    ray: str | None = None, workers: int = 2, merge: bool = False,
) -> Progress:  # fmt: skip
    """Predict the scenes of ``specs`` (:func:`scene_list`) into the folder ``out`` (module
    doc): this shard's share, locally or on Ray (``ray``: ``local`` or an address), the
    manifest kept; ``merge``: collect every shard's manifest into ``manifest.csv`` after
    (a run that is not a shard always does). Returns the progress (counts)."""
    from roadseg.paths import check_input

    i, n = parse_shard(shard_spec)
    scenes = scene_list(specs, asset)
    for scene in scenes:
        if "://" not in scene.path:
            check_input(scene.path)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start_run(out, {"run": options.run_key(), "output": output, "chunk": chunk, "cog": cog})
    mine = shard(scenes, i, n)
    jobs, skipped = plan(mine, out, output, chunk, cog)
    where = (
        f"shard {i}/{n}: {len(mine)} of {len(scenes)} scenes" if n > 1 else f"{len(scenes)} scenes"
    )
    engine = f"on Ray ({ray}, {workers} workers)" if ray else "in this process"
    print(
        f"{where}; {skipped} done before, {len(jobs)} to predict {engine} into {out}/", flush=True
    )
    progress = Progress(total=len(mine), skipped=skipped)
    manifest = manifest_path(out, i, n)
    if jobs and ray:
        run_ray(options, jobs, manifest, progress, address=None if ray == "local" else ray,
                workers=workers)  # fmt: skip
    elif jobs:
        run_local(options, jobs, manifest, progress)
    if merge or n == 1:
        path, counts = merge_manifest(out, scenes)
        print(f"wrote {path}: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    print(progress.summary())
    return progress
