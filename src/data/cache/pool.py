"""The cache's build processes: videos are decoded in spawned workers, never in the caller.

decord's native code can crash the process or spin forever (holding the GIL) on some broken files. A
worker that dies or overruns `video_timeout` seconds is replaced, and its video gets an error entry with
the reason, like a video that fails to decode (so the next build does not crash or wait on it again).

The pool drives a `FaceCropCache` (`cache` below) through what its build processes need: `detector()`,
`build_one(video, detector)`, `record_failure(video, reason)`, `video_timeout` and `cache_dir`. The cache
travels to the workers pickled, by reference to its class.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from src.data.cache.errors import CacheWriteError
from src.data.cache.reports import VideoReport
from src.data.logs import ONCE_PER_SWEEP
from src.utils.files import temporary_glob

log = logging.getLogger(__name__)
log.addFilter(ONCE_PER_SWEEP)
# spawn, not fork: forking a process whose torch/OpenMP threads hold locks can deadlock the
# children; spawned workers import only the cache's light dependencies (cv2, decord, numpy)
_START_METHOD = "spawn"
# a video normally decodes and detects in well under a second; a worker past this is presumed hung
VIDEO_TIMEOUT_S = 300.0
_STARTUP_S = 120.0  # allowed on top for a new worker to import its modules and load the detector


@dataclass
class _Fatal:
    """A worker's message that the build cannot go on (the cache folder cannot be written)."""

    message: str


def _builder(cache):
    """The detector of a process that builds entries one video at a time."""
    import cv2

    cv2.setNumThreads(1)  # one video per process; OpenCV's own threads would oversubscribe the cores
    return cache.detector()


def _worker_main(cache, conn) -> None:
    """A build process: says it is ready, then receives videos and answers with their reports."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops us
    detector = _builder(cache)
    try:
        conn.send(None)
        while True:
            video = conn.recv()
            try:
                report = cache.build_one(video, detector)
            except CacheWriteError as error:  # the cache's problem, not the video's: the build stops
                report = _Fatal(str(error))
            except Exception as error:  # e.g. a detector error: this video fails, not the build
                report = VideoReport(str(video), ok=False, reason=f"{video}: {type(error).__name__}: {error}")
            conn.send(report)
    except (EOFError, OSError):  # the parent closed the pipe (done) or is gone (killed)
        return


class _Worker:
    """One spawned build process and the video it is busy with."""

    def __init__(self, context, cache):
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_worker_main, args=(cache, child), name="face-crop-builder")
        with _standard_start_method():
            self.process.start()
        child.close()  # only the worker holds its end now: its death reads as EOF here
        self.timeout = cache.video_timeout
        self.ready = False
        self.video: Path | None = None
        self.position = -1
        self.deadline = 0.0

    def submit(self, position: int, video: Path) -> None:
        self.conn.send(video)
        # the clock starts once the worker has started up (imports, detector)
        self.video, self.deadline = video, time.monotonic() + self.timeout + (0 if self.ready else _STARTUP_S)
        self.position = position

    def receive(self) -> VideoReport | None:
        """The report of the current video, or None for the start-up message."""
        message = self.conn.recv()
        if message is None:
            self.ready, self.deadline = True, time.monotonic() + self.timeout
            return None
        self.video = None
        if isinstance(message, _Fatal):
            raise CacheWriteError(message.message)
        return message

    def stop(self) -> None:
        self.conn.close()  # an idle worker reads EOF and exits; a busy one is killed
        self.process.join(timeout=5 if self.video is None else 0)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


@contextlib.contextmanager
def _standard_start_method() -> Iterator[None]:
    """A spawned child first adopts its parent's default start method. Inside a joblib worker (Hydra's joblib
    launcher) that is loky's, unknown to a fresh interpreter ("cannot find context for 'loky'"): the child
    is started under the standard `spawn`, then the parent's default is restored."""
    current = multiprocessing.get_start_method(allow_none=True)
    if current in (None, "fork", "spawn", "forkserver"):
        yield
        return
    multiprocessing.set_start_method(_START_METHOD, force=True)
    try:
        yield
    finally:
        multiprocessing.set_start_method(current, force=True)


def _death(process) -> str:
    process.join(timeout=5)
    code = process.exitcode
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def build_isolated(cache, jobs: list[tuple[int, Path]], workers: int) -> Iterator[tuple[int, VideoReport]]:
    """Build the (position, video) `jobs` in `workers` spawned processes; yields (position, report) per
    video, as they complete.

    A worker that dies (e.g. a segfault in the decoder) or overruns `cache.video_timeout` fails only
    its video, which is recorded as failed, and is replaced; the build goes on. A CacheWriteError
    stops it.
    """
    if multiprocessing.current_process().daemon:  # a daemonic process may not start children
        log.warning("building face crops in-process (inside a daemonic process): a decoder crash is fatal")
        detector = _builder(cache)
        yield from ((position, cache.build_one(video, detector)) for position, video in jobs)
        return
    context = multiprocessing.get_context(_START_METHOD)
    pending = list(reversed(jobs))
    pool: list[_Worker] = []
    try:
        while pending or any(w.video is not None for w in pool):
            for worker in pool:
                if worker.video is None and pending:
                    worker.submit(*pending.pop())
            while pending and len(pool) < workers:
                pool.append(_Worker(context, cache))
                pool[-1].submit(*pending.pop())
            busy = [w for w in pool if w.video is not None]
            timeout = max(0.0, min(w.deadline for w in busy) - time.monotonic())
            ready = multiprocessing.connection.wait([w.conn for w in busy], timeout=timeout)
            for worker in busy:
                video, position = worker.video, worker.position
                if worker.conn in ready:
                    try:
                        report = worker.receive()
                    except (EOFError, OSError):
                        if not worker.ready:  # not this video's fault: nothing can be built
                            raise RuntimeError(
                                f"a face-crop build process failed to start ({_death(worker.process)}); "
                                "see its error above"
                            ) from None
                        failure = f"the build process died while decoding it ({_death(worker.process)})"
                    else:
                        if report is not None:
                            yield position, report
                        continue
                elif time.monotonic() > worker.deadline:
                    failure = f"decoding did not finish within {worker.timeout:g} s (a hung decoder?)"
                else:
                    continue
                log.error("%s: %s; going on in a new process", video, failure)
                worker.stop()
                remove_temporary_files(cache.cache_dir, worker.process.pid)
                pool.remove(worker)
                yield position, cache.record_failure(video, f"{video}: {failure}")
    finally:
        for worker in pool:
            busy = worker.video is not None
            worker.stop()
            if busy:  # killed mid-video: it may have left a half-written temporary file
                remove_temporary_files(cache.cache_dir, worker.process.pid)


def remove_temporary_files(cache_dir: Path, pid: int | None) -> None:
    """The temporary files of a killed build process (their names carry its pid)."""
    if pid is None:
        return
    for tmp in cache_dir.glob(f"*/{temporary_glob(pid)}"):
        tmp.unlink(missing_ok=True)
