"""Dynamic batching: concurrent requests merged into one onnxruntime run (Triton's dynamic batcher).

    batcher = DynamicBatcher(engine.predict, max_batch=64, max_delay=0.005, max_queue=2048)
    batcher.start()
    probs = await batcher.infer(images)        # from any request handler, uint8 [N, C, H, W]
    probs = batcher.predict_solo(images)       # from a job thread: a run of its own, blocking
    batcher.close()                            # graceful: finishes what is queued, then stops

One thread owns the session. It waits for the first queued request, then keeps adding requests
until the batch holds `max_batch` images or `max_delay` has passed since that first request
arrived, runs onnxruntime once and hands each request its rows. A request larger than
`max_batch` is cut into pieces that are batched like any other. Queued images are capped at
`max_queue`: a request that does not fit raises `QueueFull` at once (the server answers 429)
rather than letting the queue grow. Job slices ("solo" items) run alone, so a job's batches are
exactly those of `foldwise predict` (identical bytes); they alternate with request batches when
both wait.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

_logger = logging.getLogger(__name__)
Predict = Callable[[np.ndarray], np.ndarray]


class QueueFull(Exception):
    """The queue cannot take the request's images now."""


class Closed(Exception):
    """The batcher is shutting down and takes no new work."""


@dataclass
class _Item:
    images: np.ndarray
    done: Callable[[np.ndarray | BaseException], None]
    enqueued: float = field(default_factory=time.monotonic)


class _Gather:
    """Reassembles the pieces of a request cut at `max_batch`; calls `done` once."""

    def __init__(self, pieces: int, done: Callable[[np.ndarray | BaseException], None]) -> None:
        self.parts: list[np.ndarray | None] = [None] * pieces
        self.left = pieces
        self.done = done
        self.failed = False
        self.lock = threading.Lock()

    def piece(self, index: int) -> Callable[[np.ndarray | BaseException], None]:
        def finish(result: np.ndarray | BaseException) -> None:
            with self.lock:
                if self.failed:
                    return
                if isinstance(result, BaseException):
                    self.failed = True
                else:
                    self.parts[index] = result
                    self.left -= 1
                    if self.left:
                        return
            self.done(result if isinstance(result, BaseException) else np.concatenate(self.parts))
        return finish


class DynamicBatcher:
    """Queue + one worker thread running `predict` on merged batches."""

    def __init__(self, predict: Predict, max_batch: int, max_delay: float, max_queue: int,
                 on_batch: Callable[[int, float], None] | None = None,
                 on_queue: Callable[[int], None] | None = None) -> None:
        self.predict = predict
        self.max_batch = max_batch
        self.max_delay = max_delay
        self.max_queue = max_queue
        self.on_batch = on_batch or (lambda n, s: None)
        self.on_queue = on_queue or (lambda n: None)
        self._cond = threading.Condition()
        self._requests: deque[_Item] = deque()
        self._solo: deque[_Item] = deque()
        self._queued = 0          # request images not yet in a running batch
        self._closed = False
        self._last_solo = False
        self._thread = threading.Thread(target=self._loop, name="foldwise-batcher", daemon=True)
        self.batches = 0
        self.batched_images = 0

    @property
    def queued_images(self) -> int:
        return self._queued

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout: float | None = 60.0) -> None:
        """Take no more work; finish what is queued; stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # -- submitting -------------------------------------------------------------------------
    def submit(self, images: np.ndarray, done: Callable[[np.ndarray | BaseException], None]) -> None:
        """Queue a request's images; `done(probs or exception)` is called from the worker thread."""
        n = len(images)
        pieces = [images[i:i + self.max_batch] for i in range(0, n, self.max_batch)] or [images]
        gather = _Gather(len(pieces), done) if len(pieces) > 1 else None
        with self._cond:
            if self._closed:
                raise Closed("the server is shutting down")
            if self._queued + n > self.max_queue:
                raise QueueFull(f"queue full: {self._queued} images waiting, this request has {n} and the "
                                f"limit is {self.max_queue} (--max-queue); retry shortly")
            now = time.monotonic()
            for i, piece in enumerate(pieces):
                self._requests.append(_Item(piece, gather.piece(i) if gather else done, now))
            self._queued += n
            self.on_queue(self._queued)
            self._cond.notify()

    async def infer(self, images: np.ndarray) -> np.ndarray:
        """Probabilities for `images`, batched with whatever else is queued."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()

        def settle(result: np.ndarray | BaseException) -> None:
            if future.done():  # the client went away
                return
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

        self.submit(images, lambda result: loop.call_soon_threadsafe(settle, result))
        return await future

    def predict_solo(self, images: np.ndarray) -> np.ndarray:
        """Run `images` as a batch of their own (blocking; for job threads)."""
        future: concurrent.futures.Future = concurrent.futures.Future()

        def settle(result: np.ndarray | BaseException) -> None:
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

        with self._cond:
            if self._closed:
                raise Closed("the server is shutting down")
            self._solo.append(_Item(images, settle))
            self._cond.notify()
        return future.result()

    # -- the worker -------------------------------------------------------------------------
    def _ready_images(self) -> int:
        total = 0
        for item in self._requests:
            total += len(item.images)
            if total >= self.max_batch:
                break
        return total

    def _take(self) -> list[_Item] | None:
        """Under the lock: the next batch (None when closed and drained)."""
        while True:
            if not self._requests and not self._solo:
                if self._closed:
                    return None
                self._cond.wait()
                continue
            if self._solo and (not self._requests or not self._last_solo):
                self._last_solo = True
                return [self._solo.popleft()]
            self._last_solo = False
            deadline = self._requests[0].enqueued + self.max_delay
            while not self._closed and self._ready_images() < self.max_batch:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch, total = [], 0
            while self._requests and total + len(self._requests[0].images) <= self.max_batch:
                item = self._requests.popleft()
                batch.append(item)
                total += len(item.images)
            self._queued -= total
            self.on_queue(self._queued)
            return batch

    def _loop(self) -> None:
        while True:
            with self._cond:
                batch = self._take()
            if batch is None:
                return
            self._run(batch)

    def _run(self, batch: list[_Item]) -> None:
        images = batch[0].images if len(batch) == 1 else np.concatenate([item.images for item in batch])
        t0 = time.perf_counter()
        try:
            probs = self.predict(images)
        except Exception as exc:
            _logger.error("onnxruntime failed on a batch of %d images", len(images), exc_info=exc)
            for item in batch:
                item.done(exc)
            return
        seconds = time.perf_counter() - t0
        self.batches += 1
        self.batched_images += len(images)
        self.on_batch(len(images), seconds)
        start = 0
        for item in batch:
            n = len(item.images)
            item.done(probs[start:start + n])
            start += n
