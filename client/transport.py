"""The relay connection (docs/api.md, "The relay"): frames over one WebSocket, reconnecting.

``Transport`` numbers requests, matches the server's answers (SEND_OK, DEVICE_MISMATCH,
ERROR, PONG) to them by request id, and queues what the server pushes unasked (DELIVER,
QUEUE_EMPTY, NOTICE) for ``next_push()``.

Pipelining. ``submit()`` hands a SEND over and returns the future of its answer at
once; one writer per connection writes pending SENDs in the order they were submitted,
up to ``max_in_flight`` unanswered at a time (the relay answers a connection's frames in
order). The window keeps a slow link full without burying the small frames behind it (an
ACK, or a PING that must be answered within PONG_TIMEOUT) under seconds of queued
ciphertext, and the pace (``sends_per_second``, ``send_burst``) stays under the relay's
frame rate limit on a fast link. ``request()`` is ``submit()`` plus the wait.

Resuming without loss. A SEND stays *pending* until the server answers it, across any
number of reconnections: after each reconnection every pending SEND is written again,
byte for byte and in its original order, before any SEND submitted later. Envelopes the server
delivered but we did not acknowledge come back by themselves (the server redelivers
them), so pushes still queued from a dead connection are discarded rather than processed
twice. A SEND answered twice is harmless: the second copy of a ciphertext is rejected by
the recipient's ratchet as DUPLICATE_MESSAGE and dropped there.

Reconnection waits with exponential backoff and full jitter (a uniform delay in
``[0, min(cap, base * 2**attempt)]``), which spreads a crowd of clients out after a server
restart. It stops for good when the device is revoked (close code 4403) or the server
refuses the token (HTTP 401/403 at the handshake): retrying cannot help then.

The network sits behind ``Connector`` so that tests can run the real state machine over an
in-memory connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.typing import Origin, Subprotocol

from protocol.errors import ErrorCode, ProtocolError
from protocol.frames import (
    Ack,
    Deliver,
    DeviceMismatch,
    Error,
    Frame,
    GroupSend,
    Notice,
    Ping,
    Pong,
    QueueEmpty,
    Send,
    SendOk,
    decode_frame,
    encode_frame,
)
from protocol.limits import MAX_FRAME_BYTES

from .api import normalize_server_url
from .errors import LocalErrorCode, SealpostError

log = logging.getLogger(__name__)

SUBPROTOCOL = "sealpost.v1"
TOKEN_SUBPROTOCOL_PREFIX = "sealpost.token."  # noqa: S105 (a prefix, not a secret)
RELAY_PATH = "/ws/v1/"
REVOKED_CLOSE_CODE = 4403
PING_INTERVAL = 25.0
PONG_TIMEOUT = 10.0
MAX_IN_FLIGHT = 32  # SENDs written and not yet answered, per connection
SENDS_PER_SECOND = 80.0  # below the relay's WS_FRAMES_PER_SECOND default (100)
SEND_BURST = 200  # below its WS_FRAME_BURST default (400): acks and pings count too
OPEN_TIMEOUT = 10.0
CLOSE_TIMEOUT = 2.0

Push = Deliver | QueueEmpty | Notice
Reply = SendOk | DeviceMismatch | Error


def relay_url(server_url: str) -> str:
    """http://host/prefix -> ws://host/prefix/ws/v1/ (https -> wss)."""
    parts = urlsplit(normalize_server_url(server_url))
    scheme = "wss" if parts.scheme == "https" else "ws"
    return f"{scheme}://{parts.netloc}{parts.path}{RELAY_PATH}"


def origin_of(server_url: str) -> str:
    """The server's own origin. A non-browser client sends it because the relay refuses a
    handshake whose Origin is missing or not one of its ALLOWED_HOSTS."""
    parts = urlsplit(normalize_server_url(server_url))
    return f"{parts.scheme}://{parts.netloc}"


# --- the network seam -------------------------------------------------------------------


class ConnectionLost(Exception):
    """The connection ended; ``close_code`` is what the server sent, if anything."""

    def __init__(self, close_code: int | None = None, reason: str = "") -> None:
        super().__init__(f"connection closed ({close_code}) {reason}".strip())
        self.close_code = close_code
        self.reason = reason


class ConnectFailed(Exception):
    """The handshake did not complete. ``status`` is the HTTP status if the server answered."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class Connection(Protocol):
    async def send(self, data: bytes) -> None:
        """Send one binary message; raises ConnectionLost."""
        ...

    async def recv(self) -> bytes:
        """The next binary message; raises ConnectionLost, or ProtocolError for a message
        that is not a binary frame."""
        ...

    async def close(self) -> None: ...


Connector = Callable[[str, Sequence[str], str], Awaitable[Connection]]
"""``connector(url, subprotocols, origin)`` opens a connection or raises ConnectFailed."""


class _WebSocketConnection:
    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws

    async def send(self, data: bytes) -> None:
        try:
            await self._ws.send(data)
        except ConnectionClosed as exc:
            raise _lost(exc) from None

    async def recv(self) -> bytes:
        try:
            message = await self._ws.recv()
        except ConnectionClosed as exc:
            raise _lost(exc) from None
        if isinstance(message, str):
            raise ProtocolError(ErrorCode.MALFORMED, "a text message where a frame belongs")
        return message

    async def close(self) -> None:
        await self._ws.close()


def _lost(exc: ConnectionClosed) -> ConnectionLost:
    if exc.rcvd is None:
        return ConnectionLost(None, "no close frame")
    return ConnectionLost(exc.rcvd.code, exc.rcvd.reason)


async def websocket_connector(url: str, subprotocols: Sequence[str], origin: str) -> Connection:
    """The real network: the ``websockets`` asyncio client.

    Keepalive is ours (PING frames), so the library's own pings are off; ciphertext does
    not compress, so permessage-deflate is off too.
    """
    try:
        ws = await connect(
            url,
            origin=Origin(origin),
            subprotocols=[Subprotocol(name) for name in subprotocols],
            compression=None,
            ping_interval=None,
            max_size=MAX_FRAME_BYTES,
            open_timeout=OPEN_TIMEOUT,
            close_timeout=CLOSE_TIMEOUT,  # a dead peer must not hold up the reconnection
        )
    except InvalidStatus as exc:
        status = exc.response.status_code
        raise ConnectFailed(f"the server refused the WebSocket (HTTP {status})", status) from None
    except (OSError, TimeoutError, WebSocketException) as exc:
        raise ConnectFailed(str(exc) or type(exc).__name__) from None
    if ws.subprotocol != SUBPROTOCOL:
        await ws.close()
        raise ConnectFailed(f"the server did not select the {SUBPROTOCOL} subprotocol")
    return _WebSocketConnection(ws)


# --- reconnection policy ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter: attempt n waits U(0, min(cap, base * 2**n))."""

    base: float = 0.2
    cap: float = 10.0

    def delay(self, attempt: int, uniform: float) -> float:
        """``uniform`` is a draw from [0, 1)."""
        return uniform * min(self.cap, self.base * 2.0 ** min(attempt, 64))


# --- the transport ----------------------------------------------------------------------


@dataclass(slots=True)
class _PendingSend:
    data: bytes  # the encoded frame, request id included: resent byte for byte
    future: asyncio.Future[Reply]
    generation: int = 0  # the connection it was last written to (0: none yet)


class _Pace:
    """A token bucket: ``rate`` writes a second, ``burst`` saved up."""

    def __init__(self, rate: float | None, burst: int) -> None:
        self._rate = rate
        self._burst = float(max(1, burst))
        self._tokens = self._burst
        self._stamp: float | None = None

    def wait_time(self, now: float) -> float:
        """Seconds until a write may go (0: now, and the token is taken)."""
        if self._rate is None:
            return 0.0
        if self._stamp is not None:
            self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self._rate


class Transport:
    """One device's relay connection. ``start()`` connects once (raising on failure);
    afterwards the transport reconnects by itself until ``close()``."""

    def __init__(
        self,
        server_url: str,
        token: str,
        *,
        connector: Connector = websocket_connector,
        backoff: Backoff | None = None,
        ping_interval: float = PING_INTERVAL,
        pong_timeout: float = PONG_TIMEOUT,
        uniform: Callable[[], float] = random.random,
        max_in_flight: int = MAX_IN_FLIGHT,
        sends_per_second: float | None = SENDS_PER_SECOND,
        send_burst: int = SEND_BURST,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, not {max_in_flight}")
        self.url = relay_url(server_url)
        self.origin = origin_of(server_url)
        self._subprotocols = (SUBPROTOCOL, TOKEN_SUBPROTOCOL_PREFIX + token)
        self._connector = connector
        self._backoff = backoff or Backoff()
        self._ping_interval = ping_interval
        self._pong_timeout = pong_timeout
        self._uniform = uniform
        self._next_request_id = 1
        self._pending: dict[int, _PendingSend] = {}  # insertion order = send order
        self._max_in_flight = max_in_flight
        self._pace = _Pace(sends_per_second, send_burst)
        self._wake = asyncio.Event()  # a SEND was submitted or answered: the writer looks
        self._pings: dict[int, asyncio.Future[Pong]] = {}
        self._pushes: asyncio.Queue[Push | SealpostError] = asyncio.Queue()
        self._conn: Connection | None = None
        self._generation = 0
        self._ready = False  # connected and every pending SEND written to this connection
        self._backlog_delivered = False  # QUEUE_EMPTY arrived on the current connection
        self._runner: asyncio.Task[None] | None = None
        self._closing = False
        self._failure: SealpostError | None = None
        self.connections = 0  # successful handshakes so far (diagnostics and tests)

    @property
    def connected(self) -> bool:
        return self._ready

    @property
    def backlog_delivered(self) -> bool:
        """Whether the server has sent QUEUE_EMPTY on the current connection: every
        envelope queued while we were away is then in (or through) the push queue."""
        return self._backlog_delivered

    @property
    def queued_pushes(self) -> int:
        """Pushes received and not yet taken by ``next_push()``/``poll_push()``: 0 means the
        client is momentarily idle (what it batches receipts by)."""
        return self._pushes.qsize()

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        if self._runner is not None:
            return
        if self._closing:
            raise SealpostError(LocalErrorCode.CLOSED, "this transport was closed")
        try:
            conn = await self._open()
        except ConnectFailed as exc:
            raise _connect_error(self.url, exc) from None
        self._runner = asyncio.create_task(self._run(conn), name="sealpost-relay")

    async def close(self) -> None:
        self._closing = True
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        self._fail(SealpostError(LocalErrorCode.CLOSED, "the relay connection was closed"))

    async def _open(self) -> Connection:
        conn = await self._connector(self.url, self._subprotocols, self.origin)
        self.connections += 1
        return conn

    async def _run(self, conn: Connection) -> None:
        attempt = 0
        try:
            while True:
                if await self._serve(conn):
                    attempt = 0  # the server spoke: this was a working connection
                while True:
                    delay = self._backoff.delay(attempt, self._uniform())
                    attempt += 1
                    log.info("reconnecting to the relay in %.2f s (attempt %d)", delay, attempt)
                    await asyncio.sleep(delay)
                    try:
                        conn = await self._open()
                        break
                    except ConnectFailed as exc:
                        if exc.status in (401, 403):
                            raise _Terminal(_connect_error(self.url, exc)) from None
                        log.info("reconnect failed: %s", exc.reason)
        except _Terminal as exc:
            self._fail(exc.error)
        except Exception as exc:  # a bug: fail loudly rather than leave requests hanging
            log.exception("the relay task failed")
            self._fail(SealpostError(LocalErrorCode.CLOSED, f"the relay task failed: {exc!r}"))

    async def _serve(self, conn: Connection) -> bool:
        """Run one connection until it ends; True if the server sent anything on it."""
        self._generation += 1
        generation = self._generation
        self._conn = conn
        self._backlog_delivered = False
        self._discard_stale_pushes()
        heard = False
        pinger = asyncio.create_task(self._ping_loop(conn), name="sealpost-ping")
        writer: asyncio.Task[None] | None = None
        try:
            await self._write_pending(conn, generation)
            self._ready = True
            writer = asyncio.create_task(self._write_loop(conn, generation), name="sealpost-sends")
            while True:
                try:
                    data = await conn.recv()
                except ProtocolError as exc:
                    log.warning("ignoring a message from the relay: %s", exc)
                    continue
                heard = True
                await self._dispatch(conn, data)
        except ConnectionLost as exc:
            if exc.close_code == REVOKED_CLOSE_CODE:
                raise _Terminal(
                    SealpostError(ErrorCode.UNAUTHORIZED, "the server revoked this device")
                ) from None
            log.info("relay connection ended: %s", exc)
        except (OSError, WebSocketException) as exc:  # the library's, not ours: reconnect
            log.warning("relay connection failed: %r", exc)
        finally:
            self._ready = False
            self._conn = None
            pinger.cancel()
            if writer is not None:
                writer.cancel()
            for future in self._pings.values():
                future.cancel()
            self._pings.clear()
            with contextlib.suppress(Exception):
                await conn.close()
        return heard

    async def _write_pending(self, conn: Connection, generation: int) -> None:
        """Write the pending SENDs not yet written to this connection, oldest first, while
        fewer than ``max_in_flight`` written ones are unanswered. Loops until a pass finds
        nothing it may write: submit() may add entries while it awaits."""
        loop = asyncio.get_running_loop()
        while True:
            in_flight = 0
            unsent: _PendingSend | None = None
            for pending in self._pending.values():
                if pending.future.done():
                    continue
                if pending.generation == generation:
                    in_flight += 1
                elif unsent is None:
                    unsent = pending
            if unsent is None or in_flight >= self._max_in_flight:
                return
            if delay := self._pace.wait_time(loop.time()):
                await asyncio.sleep(delay)
                continue
            unsent.generation = generation
            await conn.send(unsent.data)

    async def _write_loop(self, conn: Connection, generation: int) -> None:
        """The connection's writer of SENDs: wakes when one is submitted or answered."""
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                await self._write_pending(conn, generation)
        except (ConnectionLost, OSError, WebSocketException):
            return  # the reader sees the connection end and reconnects

    def _discard_stale_pushes(self) -> None:
        # Unacknowledged DELIVERs are redelivered on the new connection; processing the old
        # copies too would only produce duplicates.
        while not self._pushes.empty():
            item = self._pushes.get_nowait()
            if isinstance(item, SealpostError):  # keep a failure visible
                self._pushes.put_nowait(item)
                break

    def _fail(self, error: SealpostError) -> None:
        if self._failure is None:
            self._failure = error
            self._pushes.put_nowait(error)
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(error)

    # --- frames in ----------------------------------------------------------------------

    async def _dispatch(self, conn: Connection, data: bytes) -> None:
        try:
            frame = decode_frame(data)
        except ProtocolError as exc:
            log.warning("ignoring an undecodable frame from the relay: %s", exc)
            return
        match frame:
            case Deliver() | Notice():
                self._pushes.put_nowait(frame)
            case QueueEmpty():
                self._backlog_delivered = True
                self._pushes.put_nowait(frame)
            case SendOk() | DeviceMismatch() | Error():
                self._resolve(frame)
            case Pong():
                ping = self._pings.get(frame.request_id)
                if ping is not None and not ping.done():
                    ping.set_result(frame)
            case Ping():
                with contextlib.suppress(ConnectionLost):
                    await conn.send(encode_frame(Pong(frame.request_id)))
            case _:
                log.warning("ignoring a %s frame, which only clients send", frame.type.name)

    def _resolve(self, frame: Reply) -> None:
        pending = self._pending.get(frame.request_id)
        if pending is not None:
            if not pending.future.done():
                pending.future.set_result(frame)
            return
        if isinstance(frame, Error):
            # The answer to an ACK or to a request nobody waits for any more. After a
            # redelivery, unknown_envelope is expected; anything else is worth a warning.
            code = frame.error_code
            slug = code.slug if code is not None else str(frame.code)
            level = logging.INFO if code is ErrorCode.UNKNOWN_ENVELOPE else logging.WARNING
            log.log(
                level, "relay error (request %d): %s: %s", frame.request_id, slug, frame.message
            )
        else:
            log.info("unmatched %s for request %d", frame.type.name, frame.request_id)

    # --- frames out ---------------------------------------------------------------------

    def _allocate_request_id(self) -> int:
        request_id = self._next_request_id
        self._next_request_id += 1
        return request_id

    def submit(self, frame: Send | GroupSend) -> asyncio.Future[Reply]:
        """Queue a SEND (or a GROUP_SEND) and return the future of its answer, at once.

        Frames go out in the order they were submitted, on this connection or the next
        ones, until answered (docstring of this module). The frame's own request id is
        replaced by a fresh one of this transport. Cancelling the future withdraws the
        frame if it has not been written yet (if it has, the relay may still store it).
        """
        if self._failure is not None:
            raise self._failure
        request_id = self._allocate_request_id()
        data = encode_frame(dataclasses.replace(frame, request_id=request_id))
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = _PendingSend(data, future)

        def answered(_: asyncio.Future[Reply]) -> None:
            self._pending.pop(request_id, None)
            self._wake.set()  # a place in the window is free

        future.add_done_callback(answered)
        self._wake.set()
        return future

    async def request(self, frame: Send | GroupSend) -> Reply:
        """Send a SEND (or a GROUP_SEND) and wait for its answer, across reconnections if
        need be (``submit()`` and the wait; cancelling the wait withdraws it)."""
        return await self.submit(frame)

    async def ack(self, seqs: Sequence[int]) -> bool:
        """Acknowledge stored envelopes. Best effort: an ack lost with its connection only
        means the envelope comes again, and is then dropped as a duplicate."""
        conn = self._conn
        if not self._ready or conn is None or not seqs:
            return False
        try:
            await conn.send(encode_frame(Ack(self._allocate_request_id(), tuple(seqs))))
        except ConnectionLost:
            return False
        return True

    async def next_push(self) -> Push:
        """The next DELIVER, QUEUE_EMPTY or NOTICE. Raises SealpostError once the transport
        has failed for good or was closed."""
        return self._unwrap(await self._pushes.get())

    async def poll_push(self, timeout: float | None) -> Push | None:
        """Like ``next_push``, but None if nothing arrives within ``timeout`` seconds
        (``None``: wait as long as it takes). A push already queued is returned at once."""
        try:
            item = self._pushes.get_nowait()
        except asyncio.QueueEmpty:
            try:
                async with asyncio.timeout(timeout):
                    item = await self._pushes.get()
            except TimeoutError:
                return None
        return self._unwrap(item)

    async def pushes(self) -> AsyncIterator[Push]:
        """``next_push()`` as an async iterator; ends by raising like it."""
        while True:
            yield await self.next_push()

    def _unwrap(self, item: Push | SealpostError) -> Push:
        if isinstance(item, SealpostError):
            self._pushes.put_nowait(item)  # every later call fails the same way
            raise item
        return item

    async def _ping_loop(self, conn: Connection) -> None:
        while True:
            await asyncio.sleep(self._ping_interval)
            if not self._ready:
                continue
            request_id = self._allocate_request_id()
            future: asyncio.Future[Pong] = asyncio.get_running_loop().create_future()
            self._pings[request_id] = future
            try:
                await conn.send(encode_frame(Ping(request_id)))
                await asyncio.wait_for(future, self._pong_timeout)
            except ConnectionLost:
                return
            except TimeoutError:
                log.info("no PONG within %.0f s; dropping the connection", self._pong_timeout)
                with contextlib.suppress(Exception):
                    await conn.close()
                return
            finally:
                self._pings.pop(request_id, None)


class _Terminal(Exception):
    def __init__(self, error: SealpostError) -> None:
        super().__init__(str(error))
        self.error = error


def _connect_error(url: str, exc: ConnectFailed) -> SealpostError:
    if exc.status in (401, 403):
        return SealpostError(
            ErrorCode.UNAUTHORIZED,
            f"the relay refused this device (HTTP {exc.status}): its token is wrong or revoked",
            status=exc.status,
        )
    return SealpostError(LocalErrorCode.UNREACHABLE, f"cannot connect to {url}: {exc.reason}")


__all__ = [
    "Backoff",
    "ConnectFailed",
    "Connection",
    "ConnectionLost",
    "Connector",
    "Frame",
    "Push",
    "Reply",
    "Transport",
    "origin_of",
    "relay_url",
    "websocket_connector",
]
