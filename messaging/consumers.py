"""The relay: one WebSocket connection of one device (docs/api.md, "The relay").

An adapter only: it decodes frames, calls ``messaging.services`` and sends the results.
What it keeps is per connection and exists to deliver each queued envelope once, in seq
order, with at most ``MAX_UNACKED`` unacknowledged:

* ``_cursor``: the highest seq sent on this connection. Envelopes are read from the
  database with seq > cursor, so nothing is sent twice here and nothing skipped.
* ``_in_flight``: seqs sent and not yet acknowledged (the window).
* ``_behind``: the database may hold envelopes above the cursor that were not sent (the
  backlog at connect, an envelope that arrived while the window was full, or a channel
  event that was lost or came out of order).

Live envelopes come as ``envelope.new`` channel events carrying the payload, so the
common case (the next seq, window open) needs no database read; anything else falls
back to the database. Channel events are at most once: the database is the truth, and a
reconnect redelivers everything unacknowledged. An event for a disappearing envelope
carries its expiry: one that arrives too late is not sent (the queue read skips it too).

GROUP_SEND goes to the same fan-out: one ``envelope.new`` event per roster device, each
an ordinary DELIVER on arrival.

Consumers handle one message at a time, so this state needs no locks. Logs carry at most
the device pk, a frame type and an error code: never payloads, tokens or keys.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from keys.models import Device
from keys.services import device_group
from keys.tokens import device_for_token
from messaging import services
from messaging.writer import relay_writer
from project.errors import ServiceError
from protocol.encoding import Reader
from protocol.errors import ErrorCode, ProtocolError
from protocol.frames import (
    Ack,
    Deliver,
    DeviceMismatch,
    Error,
    Frame,
    GroupSend,
    Notice,
    NoticeKind,
    Ping,
    Pong,
    QueueEmpty,
    Send,
    SendFlags,
    SendOk,
    decode_frame,
    encode_frame,
)

logger = logging.getLogger(__name__)

SUBPROTOCOL = "sealpost.v1"
TOKEN_PREFIX = "sealpost.token."  # noqa: S105 (a subprotocol prefix, not a secret)

# Close codes: the device was revoked (docs/api.md); the client kept sending far above
# the frame rate limit (4429, after HTTP 429).
CLOSE_REVOKED = 4403
CLOSE_RATE_ABUSE = 4429
# A client going faster than this multiple of the rate limit is disconnected.
ABUSE_FACTOR = 10
# At most this many seqs are named in an UNKNOWN_ENVELOPE message.
MAX_SEQS_NAMED = 20
# Both channel layers end a group membership after ``group_expiry`` (a day by default),
# and a connection that is no longer in its device's group hears no ``envelope.new``: a
# connection joins again, on a frame from its client (clients PING every 25 s), once
# this long has passed since it last did.
GROUP_REJOIN_SECONDS = 3600.0


# A frame handed to the writer, waiting for its answer: request id, frame type, outcome.
_Pending = tuple[int, str, "asyncio.Future[Any]"]


# Answering tasks of closed connections still fanning out: held here until they end
# (the event loop keeps only weak references to tasks).
_finishing: set[asyncio.Task[None]] = set()


@dataclass(frozen=True, slots=True)
class _Reply:
    """An answer that needs no writer (PONG, ERROR), waiting behind those that do."""

    frame: Frame


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; each frame takes one."""

    __slots__ = ("_burst", "_clock", "_rate", "_stamp", "_tokens")

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._tokens = burst
        self._stamp = clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


class DeviceSendBudgets:
    """One token bucket of sends per device, shared by all of the device's connections to
    this process (a device that opens ten sockets gets no more). Per process: a device
    connected to N processes at once could send N times the rate, which the per-connection
    frame budget and the queue limits still bound."""

    def __init__(self) -> None:
        self._buckets: dict[int, TokenBucket] = {}
        self._connections: dict[int, int] = {}

    def join(self, device_pk: int, rate: float, burst: float) -> TokenBucket:
        self._connections[device_pk] = self._connections.get(device_pk, 0) + 1
        return self._buckets.setdefault(device_pk, TokenBucket(rate, burst))

    def leave(self, device_pk: int) -> None:
        left = self._connections.get(device_pk, 0) - 1
        if left > 0:
            self._connections[device_pk] = left
        else:
            self._connections.pop(device_pk, None)
            self._buckets.pop(device_pk, None)


_send_budgets = DeviceSendBudgets()


def offered_token(subprotocols: list[str]) -> str | None:
    """The device token from the offered subprotocols, if ``sealpost.v1`` is offered too."""
    if SUBPROTOCOL not in subprotocols:
        return None
    tokens = [p.removeprefix(TOKEN_PREFIX) for p in subprotocols if p.startswith(TOKEN_PREFIX)]
    return tokens[0] if len(tokens) == 1 and tokens[0] else None


def request_id_of(data: bytes) -> int:
    """The request id of an undecodable frame when bytes 2.. hold a readable varint."""
    try:
        return Reader(data[2:]).varint("request_id")
    except ProtocolError:
        return 0


class RelayConsumer(AsyncWebsocketConsumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._device: Device | None = None
        self._closed = False
        self._cursor = 0
        self._in_flight: set[int] = set()
        self._behind = True
        self._queue_empty_sent = False
        self._answers: asyncio.Queue[_Pending | None] | None = None
        self._answering: asyncio.Task[None] | None = None
        self._unanswered = 0  # frames handed to the writer and not answered yet
        self._sends: TokenBucket | None = None  # the device's send budget, once connected

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels' dispatch without its ``aclose_old_connections``: that runs Django's
        ``close_old_connections`` on the database thread before every frame and every
        event, a thread hop per message that was most of the relay's cost once the
        database work was batched. The relay needs none: all its database work runs on
        the writer's thread (messaging.writer), which keeps its own connection."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"no handler for message type {message['type']}")
        await handler(message)

    # --- connection -----------------------------------------------------------------------

    async def connect(self) -> None:
        token = offered_token(list(self.scope.get("subprotocols") or []))
        # The connection's database work runs on the writer's thread and connection too,
        # in its turn: no connection opened and closed per call (messaging.writer).
        writer = relay_writer()
        device = await writer.call(partial(device_for_token, token)) if token else None
        if device is None:
            logger.debug("relay: handshake refused (no valid device token)")
            await self.close()  # before accept: the handshake fails (HTTP 403)
            return
        self._device = device
        limits = settings.SEALPOST
        self._page = int(limits["DELIVERY_PAGE"])
        self._window = int(limits["MAX_UNACKED"])
        rate, burst = float(limits["WS_FRAMES_PER_SECOND"]), float(limits["WS_FRAME_BURST"])
        self._budget = TokenBucket(rate, burst)
        self._abuse = TokenBucket(rate * ABUSE_FACTOR, burst * ABUSE_FACTOR)
        self._sends = _send_budgets.join(
            device.pk,
            float(limits["SENDS_PER_DEVICE_PER_SECOND"]),
            float(limits["SEND_BURST_PER_DEVICE"]),
        )
        # Join before reading the backlog, so an envelope committed in between is announced.
        group = device_group(device.pk)
        await self.channel_layer.group_add(group, self.channel_name)
        self.groups.append(group)  # the base class leaves it on disconnect
        self._rejoin_at = time.monotonic() + GROUP_REJOIN_SECONDS
        await self.accept(subprotocol=SUBPROTOCOL)
        from compliance.connections import log_connection  # the region's connection log

        await writer.call(partial(log_connection, device, self.scope))
        logger.debug("relay: device %s connected", device.pk)
        low = await writer.call(partial(services.prekeys_low, device))
        if low is not None:
            await self._send_frame(Notice(NoticeKind.PREKEYS_LOW, low))
        await self._deliver_from_db()

    async def disconnect(self, code: int) -> None:
        self._closed = True
        if self._answers is not None and self._answering is not None:
            # What was handed to the writer is stored all the same, and its fan-out must
            # still happen (a client that disconnects as soon as it has its SEND_OK is
            # common, and an ephemeral send has nothing else): the answering task runs
            # on to the end of its queue, sending nothing more to this socket.
            self._answers.put_nowait(None)
            _finishing.add(self._answering)
            self._answering.add_done_callback(_finishing.discard)
        if self._device is not None:
            if self._sends is not None:
                _send_budgets.leave(self._device.pk)
                self._sends = None
            logger.debug("relay: device %s disconnected (%s)", self._device.pk, code)

    @property
    def device(self) -> Device:
        if self._device is None:
            raise RuntimeError("the relay consumer has no device before connect()")
        return self._device

    async def _close(self, code: int) -> None:
        self._closed = True
        await self.close(code=code)

    # --- frames from the client -----------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self._closed or self._device is None:
            return
        if time.monotonic() >= self._rejoin_at:
            self._rejoin_at = time.monotonic() + GROUP_REJOIN_SECONDS
            await self.channel_layer.group_add(device_group(self._device.pk), self.channel_name)
        if not self._abuse.take():
            logger.debug("relay: device %s closed for flooding", self._device.pk)
            await self._close(CLOSE_RATE_ABUSE)
            return
        if not self._budget.take():
            await self._error(
                request_id_of(bytes_data) if bytes_data else 0,
                ErrorCode.RATE_LIMITED,
                f"more than {settings.SEALPOST['WS_FRAMES_PER_SECOND']} frames a second: "
                "this frame was dropped, not processed; slow down and send it again",
                "frame",
            )
            return
        if bytes_data is None:
            await self._error(
                0,
                ErrorCode.MALFORMED,
                "text messages are not part of the protocol; send binary frames",
                "text",
            )
            return
        try:
            frame = decode_frame(bytes_data)
        except ProtocolError as exc:
            await self._error(request_id_of(bytes_data), exc.code, exc.message, "frame")
            return
        try:
            await self._handle(frame)
        except Exception:
            # A bug or a database failure: say so and carry on rather than drop the socket.
            # The traceback names code, not data: no payload or token reaches it.
            logger.exception("relay: device %s %s failed", self._device.pk, frame.type.name)
            await self._error(
                frame.request_id,
                ErrorCode.INTERNAL,
                "internal error; the frame was not processed",
                frame.type.name,
            )

    async def _handle(self, frame: Frame) -> None:
        match frame:
            case Send():
                await self._on_send(frame)
            case GroupSend():
                await self._on_group_send(frame)
            case Ack():
                await self._on_ack(frame)
            case Ping():
                await self._reply(Pong(frame.request_id))
            case Pong():
                pass  # an answer to a ping; nothing to do
            case _:
                await self._error(
                    frame.request_id,
                    ErrorCode.INVALID_REQUEST,
                    f"{frame.type.name} frames are sent only by the server",
                    frame.type.name,
                )

    async def _send_allowed(self, frame: Send | GroupSend) -> bool:
        """The device's send budget (shared by its connections): a send beyond it is
        refused with rate_limited, not stored; the client sends it again later."""
        if self._sends is None or self._sends.take():
            return True
        await self._error(
            frame.request_id,
            ErrorCode.RATE_LIMITED,
            f"more than {settings.SEALPOST['SENDS_PER_DEVICE_PER_SECOND']} sends a second "
            "from this device: not stored; send it again in a second",
            frame.type.name,
        )
        return False

    async def _on_send(self, frame: Send) -> None:
        if not await self._send_allowed(frame):
            return
        request = services.SendRequest(
            self.device,
            frame.recipient,
            frame.messages,
            bool(frame.flags & SendFlags.EPHEMERAL),
            frame.ttl_seconds,
        )
        self._answer(frame.request_id, "SEND", relay_writer().send(request))

    async def _on_group_send(self, frame: GroupSend) -> None:
        if not await self._send_allowed(frame):
            return
        store = partial(
            services.enqueue_group_send,
            self.device,
            frame.group_id,
            frame.roster_digest,
            frame.payload,
            bool(frame.flags & SendFlags.EPHEMERAL),
            ttl_seconds=frame.ttl_seconds,
        )
        self._answer(frame.request_id, "GROUP_SEND", relay_writer().call(store))

    async def _on_ack(self, frame: Ack) -> None:
        # The window opens now; the deletion is the writer's, and any queue read this
        # connection asks for later runs after it. Only unknown seqs get an answer.
        self._in_flight.difference_update(frame.seqs)
        self._answer(
            frame.request_id, "ACK", relay_writer().acknowledge(self.device.pk, frame.seqs)
        )
        if self._behind:
            await self._deliver_from_db()

    # --- answers --------------------------------------------------------------------------
    # A SEND, GROUP_SEND or ACK is handed to the writer and the consumer goes on with the
    # next frame or event: a DELIVER never waits for this connection's own SENDs or ACKs to
    # commit. Answers go out in frame order from one task per connection (made on the
    # first such frame), each once its outcome is committed.

    async def _reply(self, frame: Frame) -> None:
        """Send an immediate answer (PONG, ERROR) after the answers still owed to earlier
        frames, so a client sees its frames answered in the order it sent them."""
        if self._unanswered:
            done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            done.set_result(_Reply(frame))
            self._answer(frame.request_id, frame.type.name, done)
        else:
            await self._send_frame(frame)

    def _answer(self, request_id: int, what: str, outcome: asyncio.Future[Any]) -> None:
        self._unanswered += 1
        if self._answers is None:
            self._answers = asyncio.Queue()
            self._answering = asyncio.create_task(self._answer_in_order(self._answers))
        self._answers.put_nowait((request_id, what, outcome))

    async def _answer_in_order(self, answers: asyncio.Queue[_Pending | None]) -> None:
        while True:
            item = await answers.get()
            if item is None:  # disconnected, and everything before it answered
                return
            request_id, what, outcome = item
            try:
                await self._answer_one(request_id, what, outcome)
            except Exception:
                # Sending an answer failed (the socket is going away): the next may not.
                logger.exception("relay: device %s answering %s failed", self.device.pk, what)
            finally:
                self._unanswered -= 1

    async def _answer_one(self, request_id: int, what: str, outcome: asyncio.Future[Any]) -> None:
        try:
            result = await outcome
        except ServiceError as exc:
            if not self._closed:
                await self._refused(request_id, exc, what)
            return
        except Exception:
            # A bug or a database failure: say so and carry on. The traceback names
            # code, not data: no payload or token reaches it.
            logger.exception("relay: device %s %s failed", self.device.pk, what)
            if not self._closed:
                await self._send_error(
                    request_id,
                    ErrorCode.INTERNAL,
                    "internal error; the frame was not processed",
                    what,
                )
            return
        match result:
            case _Reply(frame=frame) if not self._closed:  # queued behind earlier answers
                await self._send_frame(frame)
            case services.SendAccepted():
                if not self._closed:
                    await self._send_frame(SendOk(request_id, result.server_time_ms))
                await self._fan_out(result)
            case services.SendMismatch(missing=missing, extra=extra, stale=stale):
                logger.debug("relay: device %s SEND -> device_mismatch", self.device.pk)
                if not self._closed:
                    await self._send_frame(DeviceMismatch(request_id, missing, extra, stale))
            case services.AckResult(unknown=unknown) if unknown and not self._closed:
                named = ", ".join(str(seq) for seq in unknown[:MAX_SEQS_NAMED])
                more = len(unknown) - MAX_SEQS_NAMED
                if more > 0:
                    named += f" and {more} more"
                await self._send_error(
                    request_id,
                    ErrorCode.UNKNOWN_ENVELOPE,
                    f"this device holds no envelope with seq {named} "
                    "(already acknowledged, expired, or not its own)",
                    "ACK",
                )

    async def _refused(self, request_id: int, exc: ServiceError, what: str) -> None:
        await self._send_error(request_id, exc.code, exc.message, what)
        if exc.code is ErrorCode.UNAUTHORIZED:
            await self._close(CLOSE_REVOKED)

    async def _fan_out(self, accepted: services.SendAccepted) -> None:
        for delivery in accepted.deliveries:
            event = {
                "type": "envelope.new",
                "seq": delivery.seq,
                "sender": accepted.sender,
                "sender_device": accepted.sender_device,
                "server_time_ms": accepted.server_time_ms,
                "expires_at_ms": accepted.expires_at_ms,
                "payload": delivery.payload,
            }
            try:
                await self.channel_layer.group_send(device_group(delivery.device_pk), event)
            except Exception as exc:
                # Stored envelopes reach the device on its next connection; ephemeral
                # ones are lost, as they may be.
                logger.warning(
                    "relay: fan-out to device %s failed (%s)",
                    delivery.device_pk,
                    type(exc).__name__,
                )

    # --- channel-layer events ---------------------------------------------------------------

    async def envelope_new(self, event: dict[str, Any]) -> None:
        if self._closed:
            return
        seq = int(event["seq"])
        if seq == 0:  # ephemeral: not stored, not acknowledged, outside the window
            await self._send_frame(self._deliver_frame(event))
            return
        if seq <= self._cursor:
            return  # already sent from the database
        expires_at_ms = event.get("expires_at_ms")
        expired = expires_at_ms is not None and time.time() * 1000 >= int(expires_at_ms)
        if (
            seq == self._cursor + 1
            and not expired
            and not self._behind
            and len(self._in_flight) < self._window
        ):
            await self._send_frame(self._deliver_frame(event))
            self._cursor = seq
            self._in_flight.add(seq)
            return
        self._behind = True
        await self._deliver_from_db()

    async def prekeys_low(self, event: dict[str, Any]) -> None:
        if not self._closed:
            await self._send_frame(Notice(NoticeKind.PREKEYS_LOW, int(event["count"])))

    async def device_revoked(self, event: dict[str, Any]) -> None:
        if not self._closed:
            await self._close(CLOSE_REVOKED)

    # --- sending --------------------------------------------------------------------------

    async def _deliver_from_db(self) -> None:
        """Send queued envelopes above the cursor while the window has room; then, the
        first time the queue is found drained, QUEUE_EMPTY."""
        while self._behind and len(self._in_flight) < self._window and not self._closed:
            limit = min(self._page, self._window - len(self._in_flight))
            page = await relay_writer().call(
                partial(services.pending_envelopes, self.device, self._cursor, limit)
            )
            for envelope in page:
                await self._send_frame(
                    Deliver(
                        envelope.seq,
                        envelope.sender,
                        envelope.sender_device,
                        envelope.server_time_ms,
                        envelope.payload,
                    )
                )
                self._cursor = envelope.seq
                self._in_flight.add(envelope.seq)
            if len(page) < limit:
                self._behind = False
        if not self._behind and not self._queue_empty_sent and not self._closed:
            self._queue_empty_sent = True
            await self._send_frame(QueueEmpty())

    @staticmethod
    def _deliver_frame(event: dict[str, Any]) -> Deliver:
        return Deliver(
            int(event["seq"]),
            str(event["sender"]),
            int(event["sender_device"]),
            int(event["server_time_ms"]),
            bytes(event["payload"]),
        )

    async def _send_frame(self, frame: Frame) -> None:
        await self.send(bytes_data=encode_frame(frame))

    async def _error(self, request_id: int, code: ErrorCode, message: str, what: str) -> None:
        """An ERROR frame, in its turn (``_reply``); ``what`` names the frame type it
        answers, for the debug log."""
        await self._reply(self._error_frame(request_id, code, message, what))

    async def _send_error(self, request_id: int, code: ErrorCode, message: str, what: str) -> None:
        """An ERROR frame at once (from the task that sends the answers in order)."""
        await self._send_frame(self._error_frame(request_id, code, message, what))

    def _error_frame(self, request_id: int, code: ErrorCode, message: str, what: str) -> Error:
        logger.debug(
            "relay: device %s %s -> %s",
            self._device.pk if self._device is not None else None,
            what,
            code.slug,
        )
        return Error(request_id, int(code), message)
