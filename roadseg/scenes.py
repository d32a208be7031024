"""Scene runs: one raster of any size predicted by one process, by several local processes,
or by the ranks of ``torchrun``, through a folder of finished parts that a rerun resumes.

``predict_scene_run(options, "scene.tif", "roads.tif", processes=2)`` is what ``roadseg
predict`` runs. Every process predicts every N-th chunk of the scene into ``<out>.parts/``
(:meth:`roadseg.predict.Predictor.predict_scene`); when all are done, the parts are merged
into the output atomically. A process that dies leaves its finished chunks for the rerun.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import signal
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from roadseg.console import one_line, quiet_libraries
from roadseg.errors import Interrupted, RoadsegError
from roadseg.options import PredictOptions
from roadseg.postprocess import Decision


@dataclass(frozen=True)
class SceneRun:
    """What a scene run did: the decision of its outputs, and whether this process wrote
    the output (under torchrun only rank 0 merges)."""

    decision: Decision
    wrote: bool = True


def predict_scene_run(
    options: PredictOptions, scene: str | Path, out: str | Path, *, output: str = "prob",
    chunk: int = 2048, processes: int = 1, threads: int | None = None, cog: bool = False,
    overwrite: bool = False,
) -> SceneRun:  # fmt: skip
    """Predict ``scene`` into the GeoTIFF ``out`` with ``processes`` local processes (each
    ``threads`` CPU threads, default: ``OMP_NUM_THREADS`` or this machine's cores, shared
    out), or as this rank's share when started by torchrun (``WORLD_SIZE`` set).
    ``output``: ``prob`` or ``mask``."""
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    if processes < 1:
        raise RoadsegError(f"--processes must be at least 1, got {processes}")
    if world > 1 and processes > 1:
        raise RoadsegError("started by torchrun: leave out --processes (torchrun sets them)")
    from roadseg.identity import run_identity

    if processes > 1 or world > 1:  # refused here once, not by each process
        options.check_model()
    run = run_identity(options, output=output, chunk=chunk, cog=cog)
    job = _Job(options, str(scene), str(out), output, chunk, run, cog, overwrite)
    try:
        if processes > 1:
            return SceneRun(_predict_processes(job, processes, threads))
        if world > 1:
            return SceneRun(_predict_torchrun(job, rank, world), wrote=rank == 0)
        return SceneRun(_predict_share(job, 0, 1, merge=True))
    except KeyboardInterrupt as err:
        raise Interrupted(_kept(job)) from err


def _kept(job: _Job) -> str:
    """What an interrupted scene run leaves, and how to go on."""
    from roadseg.parts import parts_dir

    parts = parts_dir(job.out)
    if not parts.is_dir():
        return "nothing was kept"
    done = len(list(parts.glob("chunk_*.tif")))
    return (
        f"{parts}: the {done} chunks finished are kept; run the same command again to "
        "predict the rest"
    )


def _start_parts(job: _Job) -> None:
    """The parts folder, refused here (once, in the parent) when it holds another run's."""
    from roadseg.identity import prediction_identity
    from roadseg.io import open_scene
    from roadseg.parts import start_parts

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio_warning())
        with open_scene(job.scene) as src:
            plan = scene_plan(job.options, src, job.chunk)
    identity = prediction_identity(job.scene, job.run)
    start_parts(job.out, identity, plan, overwrite=job.overwrite)


def rasterio_warning():
    import rasterio

    return rasterio.errors.NotGeoreferencedWarning


def scene_decision(options: PredictOptions, scene: str, decision: Decision,
                   imagery=None) -> Decision:  # fmt: skip
    """``decision`` for ``scene``'s own pixels (gaps and areas tuned in the model's); the
    scene may be its prediction, which is on its grid (``imagery``: the models', when
    already read)."""
    from roadseg.io import open_scene
    from roadseg.reading import scene_factor

    imagery = imagery or options.imagery()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio_warning())
        with open_scene(scene) as src:
            scales, _ = scene_factor(src, imagery, options.read_options().resolution)
    return decision.scaled(max(scales))


def scene_plan(options: PredictOptions, src, chunk: int, imagery=None):
    """The :class:`~roadseg.parts.ScenePlan` of an open scene, as
    :meth:`~roadseg.predict.Predictor.predict_scene` makes it for ``options`` and the
    ``--chunk`` asked for (``imagery``: the models', when already read)."""
    from roadseg.parts import ScenePlan
    from roadseg.reading import scene_factor

    imagery = imagery or options.imagery()
    scales, _ = scene_factor(src, imagery, options.read_options().resolution)
    return ScenePlan.make(src.width, src.height, chunk=chunk, window=options.window,
                          overlap=options.overlap, factor=max(scales))  # fmt: skip


@dataclass(frozen=True)
class _Job:
    """One scene's prediction, as each process receives it (picklable)."""

    options: PredictOptions
    scene: str
    out: str
    output: str
    chunk: int
    run: dict  # roadseg.identity.run_identity
    cog: bool = False
    overwrite: bool = False


def _predict_share(job: _Job, rank: int, world: int, *, merge: bool) -> Decision:
    """Predict process ``rank``'s share of the scene's chunks; returns the decision. With
    several processes, each says in one line what it did and its peak memory."""
    import resource
    import time

    start = time.perf_counter()
    predictor, decision = job.options.predictor(lazy=True)  # made while the scene is read
    done = predictor.predict_scene(
        job.scene, job.out, output=job.output, decision=decision, chunk=job.chunk,
        rank=rank, world=world, merge=merge, run=job.run,
        read=job.options.read_options(), cog=job.cog, overwrite=job.overwrite and rank == 0,
    )  # fmt: skip
    if world > 1:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
        print(f"process {rank} of {world}: {done} chunks in {time.perf_counter() - start:.1f} s, "
              f"peak memory {peak:.0f} MB", file=sys.stderr, flush=True)  # fmt: skip
    return decision


def _merge_scene(job: _Job) -> None:
    merge_scene(job.scene, job.out, output=job.output, cog=job.cog)


def merge_scene(scene: str, out: str, *, output: str, cog: bool = False) -> None:
    """Merge the parts of a scene predicted in shares (processes, torchrun ranks, Ray
    tasks) into ``out``, by the plan recorded with them."""
    from roadseg.io import open_scene
    from roadseg.parts import merge_parts, scene_profile

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio_warning())
        with open_scene(scene) as src:
            profile = scene_profile(src, output)
    merge_parts(out, profile, cog=cog)


def _process_main(job: _Job, rank: int, world: int, threads: int) -> None:
    """One of the processes that ``processes`` starts (spawned: a fresh interpreter)."""
    from roadseg.backends import set_threads

    # stopped by the parent (Ctrl-C there): exit normally, so that a half-written part's
    # temporary file and this process's semaphores are cleaned up
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    set_threads(threads)
    quiet_libraries()
    job = dataclasses.replace(
        job, options=dataclasses.replace(job.options, quiet=job.options.quiet or rank > 0)
    )
    with contextlib.redirect_stdout(io.StringIO()) if rank > 0 else contextlib.nullcontext():
        try:
            _predict_share(job, rank, world, merge=False)
        except RoadsegError as err:
            print(f"roadseg: error: process {rank}: {one_line(err)}", file=sys.stderr)
            sys.exit(2)


def _predict_processes(job: _Job, n: int, threads: int | None) -> Decision:
    """Predict the scene with ``n`` local processes, each a share of the chunks, then merge
    their parts; a process that dies leaves its finished chunks for a rerun."""
    import multiprocessing as mp

    from roadseg.backends import get_threads

    threads = threads or max(1, get_threads() // n)
    _start_parts(job)
    print(f"predicting with {n} processes, {threads} threads each")
    context = mp.get_context("spawn")
    procs = [context.Process(target=_process_main, args=(job, r, n, threads)) for r in range(n)]
    # Ctrl-C reaches this process alone: the children start with SIGINT ignored (they
    # inherit it), and are stopped below, each part they finished kept
    default = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        for proc in procs:
            proc.start()
    finally:
        signal.signal(signal.SIGINT, default)
    try:
        for proc in procs:
            proc.join()
    finally:  # interrupted: stop every process at once, then wait for them
        running = [proc for proc in procs if proc.is_alive()]
        for proc in running:
            proc.terminate()
        for proc in running:
            proc.join()
    _check_processes(job, procs)
    _merge_scene(job)
    return job.options.output_decision()


def _check_processes(job: _Job, procs: list) -> None:
    """Refuse to merge when a process stopped: said in one line with what is kept."""
    from roadseg.parts import parts_dir

    failed = [(r, proc.exitcode) for r, proc in enumerate(procs) if proc.exitcode != 0]
    if not failed:
        return
    rank, code = failed[0]
    if code == 2:  # it printed the error a user can fix; a rerun would meet it again
        raise RoadsegError(
            f"process {rank} of {len(procs)} stopped on the error above; the chunks finished "
            "so far are kept",
            parts_dir(job.out),
        )
    raise RoadsegError(
        f"process {rank} of {len(procs)} stopped (exit code {code}); the chunks finished so "
        "far are kept: run the same command again to resume",
        parts_dir(job.out),
    )


def _predict_torchrun(job: _Job, rank: int, world: int) -> Decision:
    """Under torchrun: this process's share of the chunks (on GPU ``LOCAL_RANK`` when there
    are GPUs), a gloo barrier, and the merge by rank 0."""
    import torch
    import torch.distributed as dist

    options = job.options
    if options.device == "auto" and torch.cuda.is_available():
        options = dataclasses.replace(
            options, device=f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        )
    options = dataclasses.replace(options, quiet=options.quiet or rank > 0)
    job = dataclasses.replace(job, options=options)
    dist.init_process_group("gloo")
    try:
        if rank == 0:  # the parts folder made (or refused) once, before any rank uses it
            _start_parts(job)
        dist.barrier()
        decision = _predict_share(job, rank, world, merge=False)
        dist.barrier()
        if rank == 0:
            _merge_scene(job)
    finally:
        dist.destroy_process_group()
    return decision
