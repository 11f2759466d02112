"""serve/http/batcher.py: DynamicBatcher merges concurrent requests into runs of at most `max_batch`
images, cuts large requests and hands each caller exactly its own rows, bounds a lone request's
wait by `max_delay`, refuses work beyond `max_queue` (QueueFull), passes a failed run's exception
to every request in it, and on close() answers what is queued and refuses the rest (Closed).

The predict function is real numpy: row i of a result is image i's first pixel, so every caller can
check it got its own rows; it records the batches it ran. Timeouts are generous and only there to
turn a deadlock into a failure.
"""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from serve.http.batcher import Closed, DynamicBatcher, QueueFull

WAIT = 10.0  # seconds: only ever reached on a deadlock
Make = Callable[..., DynamicBatcher]  # the `running` fixture: makes a started batcher


class Recorder:
    """predict(images [N, 1, 2, 2] uint8) -> [N, 1] float32 (the first pixel), recording each batch."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.batches: list[np.ndarray] = []
        self.fail = fail
        self.lock = threading.Lock()

    def __call__(self, images: np.ndarray) -> np.ndarray:
        with self.lock:
            self.batches.append(images.copy())
        if self.fail is not None:
            raise self.fail
        return images[:, 0, 0, :1].astype(np.float32)

    @property
    def sizes(self) -> list[int]:
        return [len(b) for b in self.batches]


class Answer:
    """A `done` callback that waits for its result (rows or exception)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.value: np.ndarray | BaseException | None = None
        self.calls = 0

    def __call__(self, value: np.ndarray | BaseException) -> None:
        self.calls += 1
        self.value = value
        self.event.set()

    def get(self) -> np.ndarray | BaseException:
        assert self.event.wait(WAIT), "no answer: the batcher is stuck"
        return self.value


def request(first: int, n: int) -> np.ndarray:
    """n images whose first pixels are first, first+1, ... (all < 256)."""
    out = np.zeros((n, 1, 2, 2), np.uint8)
    out[:, 0, 0, 0] = np.arange(first, first + n)
    return out


def rows_of(array: np.ndarray) -> list[float]:
    """The first value of each row: an image's first pixel, or the result predict gave for it."""
    return np.asarray(array).reshape(len(array), -1)[:, 0].astype(float).tolist()


@pytest.fixture
def running() -> Iterator[Make]:
    """Factory for started batchers, each closed at the end of the test."""
    made: list[DynamicBatcher] = []

    def make(predict: Callable[[np.ndarray], np.ndarray], **kwargs: Any) -> DynamicBatcher:
        batcher = DynamicBatcher(predict, **{"max_batch": 8, "max_delay": 0.002, "max_queue": 1000, **kwargs})
        batcher.start()
        made.append(batcher)
        return batcher

    yield make
    for batcher in made:
        batcher.close(timeout=WAIT)


def submit_from_threads(batcher: DynamicBatcher, requests: list[np.ndarray]) -> list[Answer]:
    """Each request submitted from its own thread, all released at once."""
    answers = [Answer() for _ in requests]
    barrier = threading.Barrier(len(requests))

    def client(images: np.ndarray, answer: Answer) -> None:
        barrier.wait()
        batcher.submit(images, answer)

    threads = [threading.Thread(target=client, args=(r, a)) for r, a in zip(requests, answers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    return answers


def test_requests_from_several_threads_are_merged_into_one_run(running: Make) -> None:
    predict = Recorder()
    sizes: list[int] = []
    # a long max_delay: the run starts because the batch is full, not because the wait ran out
    batcher = running(predict, max_batch=8, max_delay=5.0, on_batch=lambda n, s: sizes.append(n))
    requests = [request(10 * i, 2) for i in range(4)]
    answers = submit_from_threads(batcher, requests)
    for images, answer in zip(requests, answers):
        assert rows_of(answer.get()) == rows_of(images)
    assert predict.sizes == [8] and sizes == [8]
    assert batcher.batches == 1 and batcher.batched_images == 8


def test_no_run_holds_more_than_max_batch_images(running: Make) -> None:
    predict = Recorder()
    batcher = running(predict, max_batch=8, max_delay=0.05)
    requests = [request(10 * i, 3) for i in range(5)]  # 15 images: at least two runs
    answers = submit_from_threads(batcher, requests)
    for images, answer in zip(requests, answers):
        assert rows_of(answer.get()) == rows_of(images)
    assert max(predict.sizes) <= 8 and sum(predict.sizes) == 15 and len(predict.sizes) >= 2


def test_a_request_larger_than_max_batch_is_cut_and_each_caller_gets_its_own_rows(running: Make) -> None:
    predict = Recorder()
    batcher = running(predict, max_batch=4, max_delay=0.01)
    big, small = request(0, 10), request(100, 3)
    answers = submit_from_threads(batcher, [big, small])
    assert rows_of(answers[0].get()) == list(range(10))          # the pieces put back in order
    assert rows_of(answers[1].get()) == [100.0, 101.0, 102.0]
    assert answers[0].calls == 1 and answers[1].calls == 1         # one answer per request, not per piece
    assert max(predict.sizes) <= 4 and sum(predict.sizes) == 13
    ran = sorted(v for batch in predict.batches for v in rows_of(batch))
    assert ran == sorted(rows_of(big) + rows_of(small))             # every image ran exactly once


def test_max_delay_bounds_the_wait_of_a_lone_request(running: Make) -> None:
    predict = Recorder()
    batcher = running(predict, max_batch=64, max_delay=0.005)
    answer = Answer()
    batcher.submit(request(7, 1), answer)  # far from a full batch: only the deadline can start the run
    assert rows_of(answer.get()) == [7.0]
    assert predict.sizes == [1] and batcher.queued_images == 0


def test_infer_awaits_the_probabilities_of_its_own_images(running: Make) -> None:
    batcher = running(Recorder(), max_batch=4)

    async def two_clients() -> list[np.ndarray]:
        return await asyncio.wait_for(asyncio.gather(batcher.infer(request(0, 3)), batcher.infer(request(50, 6))),
                                      WAIT)

    first, second = asyncio.run(two_clients())
    assert rows_of(first) == [0.0, 1.0, 2.0] and rows_of(second) == [50.0 + i for i in range(6)]


def test_a_full_queue_raises_queue_full_at_once() -> None:
    predict = Recorder()
    queued: list[int] = []
    batcher = DynamicBatcher(predict, max_batch=8, max_delay=0.001, max_queue=4, on_queue=queued.append)
    waiting = Answer()
    batcher.submit(request(0, 3), waiting)  # not started: nothing drains the queue
    assert batcher.queued_images == 3 and queued == [3]
    refused = Answer()
    with pytest.raises(QueueFull) as exc:
        batcher.submit(request(10, 2), refused)
    assert "3 images waiting, this request has 2 and the limit is 4" in str(exc.value)
    assert batcher.queued_images == 3 and refused.calls == 0  # nothing of it was queued
    batcher.start()
    try:
        assert rows_of(waiting.get()) == [0.0, 1.0, 2.0]
        assert batcher.queued_images == 0
        fits = Answer()
        batcher.submit(request(10, 4), fits)  # room again once the queue drained
        assert rows_of(fits.get()) == [10.0, 11.0, 12.0, 13.0]
    finally:
        batcher.close(timeout=WAIT)
    assert predict.sizes == [3, 4]


def test_an_exception_in_predict_reaches_every_waiting_request(running: Make) -> None:
    boom = RuntimeError("onnxruntime: out of memory")
    batcher = running(Recorder(fail=boom), max_batch=4, max_delay=0.05)
    answers = submit_from_threads(batcher, [request(0, 1), request(10, 2), request(20, 9)])  # the last is cut
    for answer in answers:
        assert answer.get() is boom
        assert answer.calls == 1
    with pytest.raises(RuntimeError, match="out of memory"):
        batcher.predict_solo(request(0, 2))

    async def one() -> np.ndarray:
        return await asyncio.wait_for(batcher.infer(request(0, 2)), WAIT)

    with pytest.raises(RuntimeError, match="out of memory"):
        asyncio.run(one())


def test_the_batcher_keeps_serving_after_a_failed_run(running: Make) -> None:
    calls = {"n": 0}

    def fails_once(images: np.ndarray) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ValueError("bad batch")
        return images[:, 0, 0, :1].astype(np.float32)

    batcher = running(fails_once)
    first, second = Answer(), Answer()
    batcher.submit(request(0, 1), first)
    assert isinstance(first.get(), ValueError)
    batcher.submit(request(5, 2), second)
    assert rows_of(second.get()) == [5.0, 6.0]


def test_a_solo_run_is_never_merged_with_requests(running: Make) -> None:
    predict = Recorder()
    batcher = running(predict, max_batch=64, max_delay=0.05)
    answers = [Answer() for _ in range(3)]
    for i, answer in enumerate(answers):
        batcher.submit(request(10 * i, 2), answer)
    solo = batcher.predict_solo(request(200, 5))
    assert rows_of(solo) == [200.0 + i for i in range(5)]
    for i, answer in enumerate(answers):
        assert rows_of(answer.get()) == [10.0 * i, 10.0 * i + 1]
    assert [200.0 + i for i in range(5)] in [rows_of(b) for b in predict.batches]  # a batch of its own


def test_close_answers_what_is_queued_then_refuses_new_work() -> None:
    predict = Recorder()
    batcher = DynamicBatcher(predict, max_batch=8, max_delay=60.0, max_queue=100)  # the deadline never comes
    answers = [Answer() for _ in range(3)]
    for i, answer in enumerate(answers):
        batcher.submit(request(10 * i, 2), answer)
    batcher.start()
    batcher.close(timeout=WAIT)
    for i, answer in enumerate(answers):  # answered by the time close() returns
        assert answer.event.is_set() and rows_of(answer.value) == [10.0 * i, 10.0 * i + 1]
    assert sum(predict.sizes) == 6
    with pytest.raises(Closed, match="shutting down"):
        batcher.submit(request(0, 1), Answer())
    with pytest.raises(Closed, match="shutting down"):
        batcher.predict_solo(request(0, 1))
