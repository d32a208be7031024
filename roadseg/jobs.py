"""Many scenes: scene lists, a manifest that makes reruns cheap, shards for array jobs, Ray.

``roadseg predict a.tif b.tif --out roads/`` (or a folder, a text file of paths, a STAC
Item or ItemCollection) predicts each scene into ``roads/<scene id>.tif`` with one model
loaded once. The output folder keeps

- ``run.json``: the run's identity (:func:`roadseg.identity.run_identity`: models by
  content, every option that changes a pixel, output kind); a run with other models or
  options is refused in one line naming what differs (``--overwrite`` predicts again);
- ``manifest[.shard-I-of-N].jsonl``: one line per finished or failed scene (scene, id,
  output, status, identity, seconds, finished), appended and synced as scenes finish, so
  a killed run loses nothing: the same command again skips a scene only when its output
  was made from the same content with the same identity, resumes what is half done (its
  chunks in ``<output>.parts/``), and redoes what failed or changed;
- ``manifest.csv``: every shard's lines merged (``--merge-manifest``, or at the end of a
  run that is not a shard), one row per scene, its latest status.

``--shard I/N`` takes scenes I, I+N, I+2N, ... (1-based) of the list sorted by id;
``--shard auto`` reads the index (and count) the scheduler sets: Slurm arrays, AWS Batch
array jobs and Kubernetes indexed jobs (:func:`parse_shard`).

Any error reading or predicting one scene is that scene's failure, recorded with its
one-line reason; the other scenes go on and the run ends with exit 1 naming the failed. ``--ray [ADDRESS]`` runs
the scenes as tasks on Ray actors that load the model once (a scene of at least two
chunks per worker is split into one task per worker, each every N-th chunk, merged by the
driver); Ray retries the task of a killed worker (which resumes from its finished chunks),
and a killed driver is resumed from the manifest (:func:`run_ray`).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from roadseg.errors import RoadsegError
from roadseg.io import atomic_path
from roadseg.scenelist import RASTER_SUFFIXES, Scene, is_address, parse_shard, scene_list, shard

MANIFEST_FIELDS = ("id", "scene", "output", "status", "seconds", "finished", "identity", "error")


def manifest_path(out: Path, i: int, n: int) -> Path:
    return out / ("manifest.jsonl" if n == 1 else f"manifest.shard-{i}-of-{n}.jsonl")


def start_run(out: Path, run: dict, *, overwrite: bool = False) -> None:
    """``out/run.json`` with the run's identity; a folder of another run (other models,
    options or output) is refused naming what differs, unless ``overwrite`` (its scenes
    are then predicted again: their identities differ)."""
    from roadseg.identity import describe_differences

    text = json.dumps(run, indent=2, sort_keys=True) + "\n"
    stamp = out / "run.json"
    if stamp.is_file() and stamp.read_text() != text and not overwrite:
        try:
            old = json.loads(stamp.read_text())
        except json.JSONDecodeError:
            old = {}
        raise RoadsegError(
            "holds the outputs of another run, made with other "
            f"{describe_differences(old, run) if 'format' in old else 'models or options (an older roadseg)'}: "
            "write to another folder, or add --overwrite to predict its scenes again with these",
            out,
        )  # fmt: skip
    with atomic_path(stamp) as tmp:
        tmp.write_text(text)


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
    if scenes is not None:  # the scenes of this list alone (a file removed from it is not counted)
        listed = {scene.id: scene for scene in scenes}
        rows = {k: rows.get(k, {"id": k, "scene": v.path, "status": "missing"})
                for k, v in listed.items()}  # fmt: skip
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
    run: dict  # roadseg.identity.run_identity
    overwrite: bool = False


def _stat(path: str) -> list[int] | None:
    """(size, modification time, inode) of a local scene: a file unchanged at the same path
    need not be hashed again to be known unchanged."""
    import os

    from roadseg.identity import is_remote

    try:
        st = os.stat(path) if not is_remote(path) else None
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino] if st else None


def is_done(row: dict | None, scene: Scene, target: Path, run: dict) -> bool:
    """Whether ``target`` is this run's prediction of ``scene``'s current content: its
    manifest line says done with the identity of the scene's content (hashed again unless
    the line is of the same path, size, time and inode), and the output is tagged with
    the same."""
    from roadseg.identity import identity_hash, scene_digest
    from roadseg.parts import output_identity

    if not row or row.get("status") != "done" or not target.is_file():
        return False
    stat = _stat(scene.path)
    same = stat is not None and row.get("scene") == scene.path and row.get("scene_stat") == stat
    same = same and str(row.get("scene_digest")).startswith("sha256:")  # one file, not a VRT
    try:
        digest = row.get("scene_digest") if same else scene_digest(scene.path)
    except (RoadsegError, OSError):
        return False  # its prediction reports why
    want = identity_hash({"scene": digest, **run})
    return row.get("identity") == want and output_identity(target) == want


def plan(scenes: list[Scene], out: Path, run: dict, *, output: str, chunk: int, cog: bool,
         overwrite: bool = False) -> tuple[list[SceneJob], int]:  # fmt: skip
    """(jobs of the scenes not done yet, how many are done): :func:`is_done`; a scene done
    before whose content or options changed is said and predicted again; a file in the
    way that roadseg did not write is refused unless ``overwrite``."""
    from roadseg.parts import output_identity

    rows = read_manifests(out)
    jobs, skipped = [], 0
    for scene in scenes:
        target = out / f"{scene.id}.tif"
        if is_done(rows.get(scene.id), scene, target, run):
            skipped += 1
            continue
        if rows.get(scene.id, {}).get("status") == "done":
            print(f"{scene.id}: its output was made from other content or options; "
                  "predicting it again")  # fmt: skip
        elif target.exists() and not overwrite and output_identity(target) is None:
            raise RoadsegError(
                "is in the way and is not an output of roadseg (no manifest line, no "
                "roadseg tags): move it, write to another folder, or add --overwrite",
                target,
            )
        jobs.append(SceneJob(scene, str(target), output, chunk, cog, run, overwrite))
    return jobs, skipped


def record(manifest: Path, job: SceneJob, status: str, seconds: float, error: str = "",
           digest: str | None = None) -> None:  # fmt: skip
    """Append one scene's line and sync it to disk (one write: a kill leaves at most a torn
    last line); a done line records the identity its output was made with (``digest``:
    the scene's, taken when it was read)."""
    import os

    from roadseg.identity import identity_hash

    row = {"id": job.scene.id, "scene": job.scene.path, "output": job.out, "status": status,
           "seconds": round(seconds, 2), "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
           "error": error}  # fmt: skip
    if status == "done":
        row.update(identity=identity_hash({"scene": digest, **job.run}), scene_digest=digest,
                   scene_stat=_stat(job.scene.path), models=job.run.get("models"),
                   decision=job.run.get("decision"))  # fmt: skip
    with open(manifest, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def predict_one(
    predictor, decision, options, job: SceneJob, rank: int = 0, world: int = 1
) -> tuple[float, str]:
    """One scene of a list with a loaded predictor (or its ``rank``-th share of ``world``,
    left unmerged); returns its seconds and the scene's digest."""
    from roadseg.identity import scene_digest

    start = time.perf_counter()
    digest = scene_digest(job.scene.path)  # before: a scene changed meanwhile is redone
    predictor.predict_scene(
        job.scene.path, job.out, output=job.output, decision=decision, chunk=job.chunk,
        run=job.run, read=options.read_options(), cog=job.cog, rank=rank, world=world,
        merge=world == 1, overwrite=job.overwrite and world == 1, digest=digest,
    )  # fmt: skip
    return time.perf_counter() - start, digest


def scene_failure(err: Exception, job: SceneJob) -> str:
    """One line saying why a scene failed, naming it."""
    from roadseg.console import one_line

    line = one_line(err)
    if isinstance(err, RoadsegError):
        return line
    return f"{job.scene.path}: {type(err).__name__}: {line}"


@dataclass
class Progress:
    """Scenes done, time left, and the summary line: ``total`` scenes to predict in this
    run (those done before are counted apart)."""

    total: int
    skipped: int
    start: float = dataclasses.field(default_factory=time.perf_counter)
    done: int = 0
    failed: list = dataclasses.field(default_factory=list)

    def line(self, job: SceneJob, seconds: float, error: str = "") -> str:
        finished = self.done + len(self.failed)
        elapsed = time.perf_counter() - self.start
        left = elapsed / finished * (self.total - finished)
        what = f"failed: {error}" if error else f"{seconds:.1f} s"
        return (f"[{finished}/{self.total}] {job.scene.id}: {what}; "
                f"{elapsed:.0f} s so far, about {left:.0f} s left")  # fmt: skip

    def summary(self) -> str:
        elapsed = time.perf_counter() - self.start
        rate = self.done / elapsed * 3600 if elapsed and self.done else 0.0
        return (f"{self.done + self.skipped + len(self.failed)} scenes: {self.done} predicted, "
                f"{self.skipped} done before (skipped), {len(self.failed)} failed, in "
                f"{elapsed:.0f} s ({rate:.0f} scenes/hour)")  # fmt: skip


def run_local(options, jobs: list[SceneJob], manifest: Path, progress: Progress) -> None:
    """Every job in this process, one model loaded once; any error of one scene is
    recorded as its failure and the next one runs."""
    predictor, decision = dataclasses.replace(options, quiet=True).predictor()
    progress.start = time.perf_counter()  # the time left counts scenes, not the model's start
    for job in jobs:
        try:
            seconds, digest = predict_one(predictor, decision, options, job)
        except Exception as err:  # noqa: BLE001 - one scene's failure, whatever it is
            _finish(manifest, progress, job, 0.0, scene_failure(err, job))
        else:
            _finish(manifest, progress, job, seconds, "", digest)


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
    shares, failed = {}, {}
    for job in jobs:
        try:
            shares[job.out] = _shares(options, imagery, job, workers)
        except Exception as err:  # noqa: BLE001 - the scene's failure
            failed[job.out] = scene_failure(err, job)
            _finish(manifest, progress, job, 0.0, failed[job.out])
    tasks = [(job, rank, shares[job.out][0]) for job in jobs if job.out in shares
             for rank in range(shares[job.out][0])]  # fmt: skip
    left, spent = {k: n for k, (n, _) in shares.items()}, {}
    progress.start = time.perf_counter()
    for job, seconds, error, digest in pool.map_unordered(lambda a, t: a.predict.remote(*t), tasks):
        if left.get(job.out, 0) == 0:
            continue  # a share of a scene that already failed
        spent[job.out] = spent.get(job.out, 0.0) + seconds
        left[job.out] = 0 if error else left[job.out] - 1
        if not error and left[job.out] == 0 and shares[job.out][0] > 1:
            error, digest = _merge_shares(job), shares[job.out][1]
        if error or left[job.out] == 0:
            _finish(manifest, progress, job, spent[job.out], error, digest)


def _shares(options, imagery, job: SceneJob, workers: int) -> tuple[int, str | None]:
    """Tasks a scene is split into: one, or one per worker for a scene of at least two
    chunks per worker (each predicts every N-th chunk; the driver merges, and starts the
    parts folder here, once, so that the tasks find it); and the scene's digest for a
    split scene (the tasks' own is returned with them)."""
    import warnings

    import rasterio

    from roadseg.identity import prediction_identity, scene_digest
    from roadseg.io import open_scene
    from roadseg.parts import start_parts
    from roadseg.scenes import scene_plan

    if workers < 2:
        return 1, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with open_scene(job.scene.path) as src:
            scene = scene_plan(options, src, job.chunk, imagery)
    if len(scene.chunks()) < 2 * workers:
        return 1, None
    digest = scene_digest(job.scene.path)
    start_parts(job.out, prediction_identity(job.scene.path, job.run, digest), scene,
                overwrite=job.overwrite)  # fmt: skip
    return workers, digest


def _merge_shares(job: SceneJob) -> str:
    """Merge a scene predicted in shares; the error said in one line, or ""."""
    from roadseg.scenes import merge_scene

    try:
        merge_scene(job.scene.path, job.out, output=job.output, cog=job.cog)
    except Exception as err:  # noqa: BLE001 - the scene's failure
        return scene_failure(err, job)
    return ""


def _finish(manifest: Path, progress: Progress, job: SceneJob, seconds: float, error: str,
            digest: str | None = None) -> None:  # fmt: skip
    if error:
        progress.failed.append(job.scene.id)
        record(manifest, job, "failed", 0.0, error)
        print(progress.line(job, 0.0, error), file=sys.stderr, flush=True)
    else:
        progress.done += 1
        record(manifest, job, "done", seconds, digest=digest)
        print(progress.line(job, seconds), flush=True)


class SceneWorker:
    """A Ray actor: the model loaded once, scenes predicted one after another."""

    def __init__(self, options, threads: int):
        from roadseg.backends import set_threads

        set_threads(threads)
        self.options = dataclasses.replace(options, quiet=True)
        with contextlib.redirect_stdout(io.StringIO()):
            self.predictor, self.decision = self.options.predictor()

    def pid(self) -> int:
        import os

        return os.getpid()

    def predict(self, job: SceneJob, rank: int = 0, world: int = 1) -> tuple:
        """(job, seconds, error, digest) of a scene, or with ``world`` > 1 of its ``rank``-th
        share of chunks (not merged); any error is returned as the scene's one-line failure."""
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                seconds, digest = predict_one(
                    self.predictor, self.decision, self.options, job, rank, world
                )
                return job, seconds, "", digest
        except Exception as err:  # noqa: BLE001 - one scene's failure, whatever it is
            return job, 0.0, scene_failure(err, job), None


def check_outputs(specs: list[str], scenes: list[Scene], out: Path) -> None:
    """Refuse, before any work, an output folder that is a file's name, is or is inside a
    folder of scenes being read, or holds an input (a scene or a list): its outputs,
    parts or manifest could overwrite them, or be read as scenes on the next run."""
    from roadseg.paths import check_output

    if out.suffix.lower() in RASTER_SUFFIXES and not out.is_dir():
        raise RoadsegError(
            "names a file, but a list of scenes writes one GeoTIFF per scene into a folder: "
            "name a folder (or predict one scene to write one file)",
            out,
        )
    check_output(out, folder=True)
    where = out.resolve()
    for spec in specs:
        if is_address(spec):
            continue
        source = Path(spec).resolve()
        if Path(spec).is_dir() and (where == source or source in where.parents):
            raise RoadsegError(
                f"is {'the' if where == source else 'inside the'} folder of scenes being read "
                f"({spec}): outputs there would overwrite scenes or be read as scenes; "
                "choose a folder outside it",
                out,
            )
    inputs = [*specs, *(s.path for s in scenes)]
    for path in (p for p in inputs if not is_address(p)):
        if where in Path(path).resolve().parents:
            raise RoadsegError(
                f"holds an input of this command ({path}): its outputs could overwrite it; "
                "choose another folder",
                out,
            )


def predict_many(
    options, specs: list[str], out: str | Path, *, output: str = "prob", chunk: int = 2048,
    cog: bool = False, asset: str | None = None, shard_spec: str | None = None,
    shard_base: int = 1, ray: str | None = None, workers: int = 2, merge: bool = False,
    overwrite: bool = False, vectors=None,
) -> Progress:  # fmt: skip
    """Predict the scenes of ``specs`` (:func:`scene_list`) into the folder ``out`` (module
    doc): this shard's share, locally or on Ray (``ray``: ``local`` or an address), the
    manifest kept; ``merge``: collect every shard's manifest into ``manifest.csv`` and the
    GIS outputs after (:mod:`roadseg.products`; a run that is not a shard always does);
    ``vectors``: a :class:`~roadseg.products.VectorSpec`. Returns the progress (counts)."""
    from roadseg.errors import Interrupted
    from roadseg.identity import run_identity
    from roadseg.products import check_names, gis_outputs

    i, n = parse_shard(shard_spec, shard_base)
    scenes = scene_list(specs, asset)
    out = Path(out)
    check_outputs(specs, scenes, out)
    check_names([scene.id for scene in scenes], vectors)
    run = run_identity(options, output=output, chunk=chunk, cog=cog)
    out.mkdir(parents=True, exist_ok=True)
    start_run(out, run, overwrite=overwrite)
    mine = shard(scenes, i, n)
    jobs, skipped = plan(mine, out, run, output=output, chunk=chunk, cog=cog, overwrite=overwrite)
    where = (
        f"shard {i}/{n}: {len(mine)} of {len(scenes)} scenes" if n > 1 else f"{len(scenes)} scenes"
    )
    engine = f"on Ray ({ray}, {workers} workers)" if ray else "in this process"
    print(
        f"{where}; {skipped} done before, {len(jobs)} to predict {engine} into {out}/", flush=True
    )
    progress = Progress(total=len(jobs), skipped=skipped)
    manifest = manifest_path(out, i, n)
    try:
        if jobs and ray:
            run_ray(options, jobs, manifest, progress, address=None if ray == "local" else ray,
                    workers=workers)  # fmt: skip
        elif jobs:
            run_local(options, jobs, manifest, progress)
    except KeyboardInterrupt as err:
        raise Interrupted(
            f"{out}: {progress.done} scenes finished in this run are in the manifest, the "
            "scene being predicted keeps its finished chunks; run the same command again to go on"
        ) from err
    final = merge or n == 1
    if final:
        path, counts = merge_manifest(out, scenes)
        print(f"wrote {path}: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    gis_outputs(options, out, read_manifests(out), scenes, mine, output=output, vectors=vectors,
                final=final, failed=progress.failed)  # fmt: skip
    print(progress.summary())
    return progress
