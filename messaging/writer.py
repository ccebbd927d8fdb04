"""The relay's writer: how a relay process reaches the database for SEND, ACK, GROUP_SEND
and queue reads, in batches (group commit).

Why. Channels' ``database_sync_to_async`` runs every call of every consumer of a process
on one thread, one call at a time, and around each call closes the thread's database
connection, so every SEND and every ACK paid for a connection, a transaction and a commit
of its own (docs/scaling.md, "Where the time goes"). The writer keeps one thread (so one
connection, which it keeps open) but feeds it batches: everything the consumers submitted
while the previous batch was being stored goes in the next one, and consecutive SENDs
and ACKs share one transaction with a fixed number of statements
(``services.enqueue_sends``, ``services.acknowledge_many``). Nothing waits on purpose: on
a quiet server a batch is a single frame; under load batches grow by themselves, and so
does the number of messages per commit (per fsync on SQLite).

What it keeps of docs/protocol.md §9.10:

* Persist before SEND_OK. A SEND's future resolves only after the transaction that stored
  it committed; the consumer answers SEND_OK and fans out from there.
* All or nothing. Each SEND in a batch is checked and stored as a unit; a refused one
  takes no seq and stores nothing. If the batch fails as a whole (a database error),
  nothing of it was stored, and each of its operations is run again alone with the
  one-at-a-time services, so one bad operation cannot sink the others.
* Order. Operations run in the order they were submitted: a batch is a run of
  consecutive SENDs and ACKs, and any other call (a group send, a queue read) runs alone,
  in its place. So a connection's SENDs take seqs in frame order, and a queue read
  submitted after an ACK does not see the acknowledged envelopes. Within a run the ACKs
  are applied before the SENDs. No client can tell: an ACK names envelopes that were
  delivered, so committed by an earlier batch (a client that acknowledges a seq it was
  never given hears ``unknown_envelope``, as it would have a moment earlier), and a
  SEND then meets a queue already cleared of them, as it would have a moment later.

One writer (queue) per event loop, created on first use (a Daphne process has one loop;
tests make one per test), and one thread per process for all of them, which holds the
process's relay connection to the database until ``close_writers``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, cast

from django.db import connection, transaction

from messaging import services
from project.errors import ServiceError

logger = logging.getLogger(__name__)

# Operations a batch takes at most: bounds a transaction's length (and its lock time) and
# the statement sizes; far above what 2 cores can fill in one commit.
MAX_BATCH = 512
# Under a moderate load a batch would hold two or three frames and cost nearly what a full
# one costs (the statements, the commit, the thread hop): measured, 400-500 µs of CPU per
# message paced at 2,000 a second against 270-320 µs flat out. So when the last batch held
# more than one operation (the server is busy) and fewer than LINGER_BELOW are waiting,
# the writer waits LINGER_SECONDS for more before it stores them. A lone frame on a quiet
# server is stored at once.
LINGER_BELOW = 32
LINGER_SECONDS = 0.002

_Kind = Literal["send", "ack", "call"]


@dataclass(slots=True)
class _Operation:
    kind: _Kind
    argument: Any
    future: asyncio.Future[Any]


# What one operation came to in the thread: (True, result) or (False, the exception).
_Outcome = tuple[bool, Any]


class RelayWriter:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: deque[_Operation] = deque()
        self._executor = _thread()
        self._draining = False
        # Counters for the debug log and tests: batches stored and operations in them.
        self.batches = 0
        self.operations = 0

    def send(self, request: services.SendRequest) -> asyncio.Future[services.SendResult]:
        """Store one SEND; the future gives what ``enqueue_send`` returns, or raises what
        it raises (ServiceError), once committed."""
        return self._submit("send", request)

    def acknowledge(
        self, device_pk: int, seqs: Sequence[int]
    ) -> asyncio.Future[services.AckResult]:
        return self._submit("ack", (device_pk, tuple(seqs)))

    def call[T](self, function: Callable[[], T]) -> asyncio.Future[T]:
        """Run ``function`` on the writer's thread, in its turn."""
        return self._submit("call", function)

    def _submit(self, kind: _Kind, argument: Any) -> asyncio.Future[Any]:
        future = self._loop.create_future()
        self._queue.append(_Operation(kind, argument, future))
        if not self._draining:
            self._draining = True
            self._loop.create_task(self._drain())
        return future

    async def _drain(self) -> None:
        try:
            last = 0
            while self._queue:
                if last > 1 and len(self._queue) < LINGER_BELOW:
                    await asyncio.sleep(LINGER_SECONDS)
                count = last = min(len(self._queue), MAX_BATCH)
                batch = [self._queue.popleft() for _ in range(count)]
                work = [(op.kind, op.argument) for op in batch]
                try:
                    outcomes = await self._loop.run_in_executor(self._executor, _execute, work)
                except BaseException as exc:
                    # The thread is gone (shut down) or this task was cancelled with the loop.
                    for op in batch:
                        if not op.future.done():
                            op.future.set_exception(RuntimeError("the relay writer stopped"))
                    if not isinstance(exc, Exception):
                        raise
                    continue
                self.batches += 1
                self.operations += count
                for op, (ok, value) in zip(batch, outcomes, strict=True):
                    if op.future.done():  # cancelled by a consumer that went away
                        continue
                    if ok:
                        op.future.set_result(value)
                    else:
                        op.future.set_exception(value)
        finally:
            self._draining = False
            if self._queue:  # left by a cancellation: fail them rather than hang
                for op in self._queue:
                    if not op.future.done():
                        op.future.set_exception(RuntimeError("the relay writer stopped"))
                self._queue.clear()


_writers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, RelayWriter] = (
    weakref.WeakKeyDictionary()
)
_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _thread() -> ThreadPoolExecutor:
    """The one thread of the process that runs the writers' work, whichever event loop
    they belong to: one database connection per process, however many loops (tests make
    one per test, Hypothesis one per example)."""
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relay-writer")
        return _executor


def relay_writer() -> RelayWriter:
    """The writer of the running event loop."""
    loop = asyncio.get_running_loop()
    writer = _writers.get(loop)
    if writer is None:
        writer = _writers[loop] = RelayWriter(loop)
    return writer


def close_writers() -> None:
    """Forget every writer and close the thread's database connection (blocking): for
    tests, whose database is flushed and at the end dropped, and for an orderly shutdown.
    A writer used afterwards is made anew and connects again."""
    _writers.clear()
    with _executor_lock:
        executor = _executor
    if executor is not None:
        # A lambda: ``connection.close`` would be looked up (bound) on this thread.
        executor.submit(lambda: connection.close()).result(timeout=30)


# --- on the writer's thread -----------------------------------------------------------------


def _execute(work: Sequence[tuple[_Kind, Any]]) -> list[_Outcome]:
    """Run a batch in order: each run of consecutive SENDs and ACKs in one transaction,
    every other call alone."""
    outcomes: list[_Outcome] = []
    start = 0
    while start < len(work):
        if work[start][0] == "call":
            outcomes.append(_call(cast(Callable[[], Any], work[start][1])))
            start += 1
            continue
        end = start
        while end < len(work) and work[end][0] != "call":
            end += 1
        outcomes.extend(_store(work[start:end]))
        start = end
    return outcomes


def _store(run: Sequence[tuple[_Kind, Any]]) -> list[_Outcome]:
    """SENDs and ACKs in one transaction (the ACKs first); if it fails, each alone."""
    sends = [argument for kind, argument in run if kind == "send"]
    acks = [argument for kind, argument in run if kind == "ack"]
    try:
        with transaction.atomic():
            acked = iter(services.acknowledge_many(acks) if acks else [])
            sent = iter(services.enqueue_sends(sends) if sends else [])
    except Exception:
        logger.warning("relay writer: a batch of %d failed; storing each alone", len(run))
        _recover()
        return [_alone(kind, argument) for kind, argument in run]
    outcomes: list[_Outcome] = []
    for kind, _ in run:
        if kind == "ack":
            outcomes.append((True, next(acked)))
        else:
            result = next(sent)
            outcomes.append((not isinstance(result, ServiceError), result))
    return outcomes


def _alone(kind: _Kind, argument: Any) -> _Outcome:
    if kind == "ack":
        return _call(lambda: services.acknowledge_many([argument])[0])
    request = cast(services.SendRequest, argument)
    return _call(
        lambda: services.enqueue_send(
            request.sender_device,
            request.recipient,
            request.messages,
            request.ephemeral,
            ttl_seconds=request.ttl_seconds,
        )
    )


def _call(function: Callable[[], Any]) -> _Outcome:
    try:
        return True, function()
    except ServiceError as exc:
        return False, exc
    except Exception as exc:
        _recover()
        return False, exc


def _recover() -> None:
    """After a failure: drop the connection if it broke (the next query reconnects)."""
    try:
        if connection.connection is not None and not connection.is_usable():
            connection.close()
    except Exception:
        connection.close()
