"""Server-side batching: images from concurrent requests share forward passes.

Requests put their images into one queue; a single worker takes the first waiting image,
gathers more for at most ``window_s`` seconds (or until ``max_batch``), runs the model
on them in a worker thread (the event loop keeps serving), and hands each request its
results. The queue holds at most ``max_queue`` waiting images; a request that would
overflow it is refused at once with :class:`QueueFullError`.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ..errors import ZsadError
from ..plurals import counted


class QueueFullError(ZsadError, RuntimeError):
    """The queue cannot take the request's images now; retry later."""


@dataclass
class _Pending:
    item: Any
    future: asyncio.Future


class BatchingQueue:
    """``await queue.submit(items)`` -> results in order, computed in batches by
    ``run_batch(list_of_items) -> list_of_results`` (a blocking function)."""

    def __init__(self, run_batch: Callable[[list[Any]], Sequence[Any]], max_batch: int, window_s: float, max_queue: int):
        if max_batch < 1 or max_queue < 1 or window_s < 0:
            raise ValueError("max_batch and max_queue must be >= 1 and the window >= 0")
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.window_s = window_s
        self.max_queue = max_queue
        self.passes = 0  # forward passes run so far
        self.images_done = 0  # images scored so far
        self.largest_batch = 0
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task | None = None

    @property
    def waiting(self) -> int:
        """Images queued and not yet taken by the worker."""
        return 0 if self._queue is None else self._queue.qsize()

    def start(self) -> None:
        """Start the worker on the running event loop (call once, from the loop)."""
        self._queue = asyncio.Queue()
        self._worker = asyncio.get_running_loop().create_task(self._work())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None

    async def submit(self, items: Sequence[Any]) -> list[Any]:
        if self._queue is None:
            raise RuntimeError("the batching queue is not started")
        if self.waiting + len(items) > self.max_queue:
            raise QueueFullError(
                f"{counted(self.waiting, 'image')} {'is' if self.waiting == 1 else 'are'} waiting (limit {self.max_queue}); retry shortly"
            )
        loop = asyncio.get_running_loop()
        pending = [_Pending(item, loop.create_future()) for item in items]
        for entry in pending:
            self._queue.put_nowait(entry)
        return list(await asyncio.gather(*(entry.future for entry in pending)))

    async def _gather_batch(self) -> list[_Pending]:
        batch = [await self._queue.get()]
        deadline = asyncio.get_running_loop().time() + self.window_s
        while len(batch) < self.max_batch:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0 and self._queue.empty():
                break
            try:
                batch.append(self._queue.get_nowait() if remaining <= 0 else await asyncio.wait_for(self._queue.get(), remaining))
            except (asyncio.TimeoutError, asyncio.QueueEmpty):
                break
        return batch

    async def _work(self) -> None:
        while True:
            batch = await self._gather_batch()
            live = [entry for entry in batch if not entry.future.cancelled()]
            if not live:
                continue
            self.passes += 1
            self.images_done += len(live)
            self.largest_batch = max(self.largest_batch, len(live))
            try:
                results = await asyncio.to_thread(self.run_batch, [entry.item for entry in live])
            except Exception as error:  # the requests get the error, the worker keeps serving
                for entry in live:
                    if not entry.future.done():
                        entry.future.set_exception(error)
                continue
            for entry, result in zip(live, results):
                if not entry.future.done():
                    entry.future.set_result(result)
