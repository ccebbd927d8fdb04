"""The relay transport: URL and handshake, request matching, reconnection and resending."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from http import HTTPStatus

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from client.errors import LocalErrorCode, SealpostError
from client.transport import (
    Backoff,
    ConnectFailed,
    Connection,
    ConnectionLost,
    Transport,
    origin_of,
    relay_url,
)
from protocol.errors import ErrorCode
from protocol.frames import (
    Ack,
    Deliver,
    DeviceMessage,
    Error,
    Frame,
    Ping,
    Pong,
    QueueEmpty,
    Send,
    SendOk,
    decode_frame,
    encode_frame,
)

FAST = Backoff(base=0.001, cap=0.005)
SEND = Send(0, "bob", (DeviceMessage(1, 7, b"ciphertext"),))


def test_relay_url_and_origin() -> None:
    assert relay_url("http://127.0.0.1:8000") == "ws://127.0.0.1:8000/ws/v1/"
    assert relay_url("https://chat.example/") == "wss://chat.example/ws/v1/"
    assert relay_url("https://chat.example/sealpost") == "wss://chat.example/sealpost/ws/v1/"
    assert origin_of("https://chat.example/sealpost") == "https://chat.example"
    with pytest.raises(SealpostError) as info:
        relay_url("ftp://chat.example")
    assert info.value.code is ErrorCode.INVALID_VALUE


def test_backoff_is_exponential_with_full_jitter() -> None:
    backoff = Backoff(base=0.2, cap=10.0)
    assert backoff.delay(0, 0.0) == 0.0
    assert backoff.delay(0, 0.5) == pytest.approx(0.1)
    assert backoff.delay(3, 0.5) == pytest.approx(0.8)
    assert backoff.delay(6, 0.999) == pytest.approx(9.99)  # 0.2 * 64 = 12.8, capped at 10
    assert backoff.delay(10_000, 0.5) == pytest.approx(5.0)  # no overflow
    assert all(0 <= backoff.delay(n, 0.999) <= 10 for n in range(100))


# --- a scripted in-memory network -----------------------------------------------------------


class ScriptedConnection:
    def __init__(self) -> None:
        self.inbox: asyncio.Queue[bytes | int | None] = asyncio.Queue()
        self.sent: list[bytes] = []
        self.closed = False
        self.new_frame = asyncio.Event()

    def push(self, frame: Frame) -> None:
        self.inbox.put_nowait(encode_frame(frame))

    def hang_up(self, code: int | None = None) -> None:
        self.closed = True
        self.inbox.put_nowait(code)

    def frames(self) -> list[Frame]:
        return [decode_frame(data) for data in self.sent]

    async def send(self, data: bytes) -> None:
        if self.closed:
            raise ConnectionLost(None)
        self.sent.append(data)
        self.new_frame.set()

    async def recv(self) -> bytes:
        item = await self.inbox.get()
        if isinstance(item, bytes):
            return item
        self.closed = True
        raise ConnectionLost(item)

    async def close(self) -> None:
        if not self.closed:
            self.hang_up(1000)

    async def next_sent(self, count: int) -> list[Frame]:
        """Wait until ``count`` frames were sent on this connection."""
        async with asyncio.timeout(2):
            while len(self.sent) < count:
                self.new_frame.clear()
                await self.new_frame.wait()
        return self.frames()


class ScriptedNetwork:
    def __init__(self) -> None:
        self.connections: list[ScriptedConnection] = []
        self.failures: list[ConnectFailed] = []  # raised by the next attempts, in order
        self.attempts: list[tuple[str, tuple[str, ...], str]] = []
        self.connected = asyncio.Event()

    async def __call__(self, url: str, subprotocols: Sequence[str], origin: str) -> Connection:
        self.attempts.append((url, tuple(subprotocols), origin))
        if self.failures:
            raise self.failures.pop(0)
        conn = ScriptedConnection()
        self.connections.append(conn)
        self.connected.set()
        return conn

    async def connection(self, number: int) -> ScriptedConnection:
        async with asyncio.timeout(2):
            while len(self.connections) < number:
                self.connected.clear()
                await self.connected.wait()
        return self.connections[number - 1]


@pytest.fixture
def network() -> ScriptedNetwork:
    return ScriptedNetwork()


def transport_on(
    network: ScriptedNetwork, ping_interval: float = 25.0, pong_timeout: float = 10.0
) -> Transport:
    return Transport(
        "https://chat.example",
        "TOKEN",
        connector=network,
        backoff=FAST,
        ping_interval=ping_interval,
        pong_timeout=pong_timeout,
    )


async def test_handshake_offers_both_subprotocols_and_the_origin(
    network: ScriptedNetwork,
) -> None:
    transport = transport_on(network)
    await transport.start()
    assert network.attempts == [
        (
            "wss://chat.example/ws/v1/",
            ("sealpost.v1", "sealpost.token.TOKEN"),
            "https://chat.example",
        )
    ]
    await transport.close()


async def test_replies_are_matched_by_request_id(network: ScriptedNetwork) -> None:
    transport = transport_on(network)
    await transport.start()
    conn = await network.connection(1)
    first = asyncio.create_task(transport.request(SEND))
    second = asyncio.create_task(transport.request(SEND))
    sent = await conn.next_sent(2)
    ids = [frame.request_id for frame in sent]
    assert len(set(ids)) == 2 and 0 not in ids
    conn.push(Error(ids[1], int(ErrorCode.QUEUE_FULL), "full"))
    conn.push(SendOk(ids[0], 99))
    assert await first == SendOk(ids[0], 99)
    reply = await second
    assert isinstance(reply, Error) and reply.error_code is ErrorCode.QUEUE_FULL
    await transport.close()


async def test_pushes_come_in_order_and_acks_go_out(network: ScriptedNetwork) -> None:
    transport = transport_on(network)
    await transport.start()
    conn = await network.connection(1)
    deliver = Deliver(5, "alice", 1, 1000, b"payload")
    conn.push(deliver)
    conn.push(QueueEmpty())
    assert await transport.next_push() == deliver
    assert await transport.next_push() == QueueEmpty()
    assert transport.backlog_delivered
    assert await transport.poll_push(0.01) is None
    assert await transport.ack([5])
    [ack] = await conn.next_sent(1)
    assert isinstance(ack, Ack) and ack.seqs == (5,)
    await transport.close()


async def test_a_send_is_resent_byte_for_byte_after_a_reconnect(
    network: ScriptedNetwork,
) -> None:
    transport = transport_on(network)
    await transport.start()
    first_conn = await network.connection(1)
    first = asyncio.create_task(transport.request(SEND))
    second = asyncio.create_task(
        transport.request(Send(0, "carol", (DeviceMessage(2, 9, b"other"),)))
    )
    await first_conn.next_sent(2)
    # Undelivered pushes of the dead connection are dropped: the server redelivers them.
    first_conn.push(Deliver(1, "alice", 1, 1000, b"stale"))
    first_conn.hang_up()

    second_conn = await network.connection(2)
    await second_conn.next_sent(2)
    assert second_conn.sent == first_conn.sent  # same bytes, same order, same request ids
    second_conn.push(QueueEmpty())
    second_conn.push(SendOk(decode_frame(second_conn.sent[0]).request_id, 1))
    second_conn.push(SendOk(decode_frame(second_conn.sent[1]).request_id, 2))
    assert isinstance(await first, SendOk) and isinstance(await second, SendOk)
    assert await transport.next_push() == QueueEmpty()
    await transport.close()


async def test_requests_made_while_disconnected_go_out_after_reconnecting(
    network: ScriptedNetwork,
) -> None:
    transport = Transport(
        "https://chat.example",
        "TOKEN",
        connector=network,
        backoff=Backoff(base=0.05, cap=0.05),
        uniform=lambda: 1.0,  # every retry waits exactly 50 ms
    )
    await transport.start()
    conn = await network.connection(1)
    network.failures = [ConnectFailed("down"), ConnectFailed("still down")]
    conn.hang_up()
    async with asyncio.timeout(1):
        while transport.connected:
            await asyncio.sleep(0.001)
    assert not await transport.ack([1])  # nothing to ack on
    pending = asyncio.create_task(transport.request(SEND))
    second = await network.connection(2)
    [frame] = await second.next_sent(1)
    assert isinstance(frame, Send) and frame.messages == SEND.messages
    second.push(SendOk(frame.request_id, 3))
    assert await pending == SendOk(frame.request_id, 3)
    assert len(network.attempts) == 4  # the first, two failures, then success
    await transport.close()


async def test_revocation_stops_everything(network: ScriptedNetwork) -> None:
    transport = transport_on(network)
    await transport.start()
    conn = await network.connection(1)
    pending = asyncio.create_task(transport.request(SEND))
    await conn.next_sent(1)
    conn.hang_up(4403)
    with pytest.raises(SealpostError) as info:
        await pending
    assert info.value.code is ErrorCode.UNAUTHORIZED
    with pytest.raises(SealpostError):
        await transport.next_push()
    with pytest.raises(SealpostError):
        await transport.request(SEND)
    await asyncio.sleep(0.02)
    assert len(network.attempts) == 1  # no reconnection
    await transport.close()


async def test_a_refused_token_on_reconnect_is_final(network: ScriptedNetwork) -> None:
    transport = transport_on(network)
    await transport.start()
    conn = await network.connection(1)
    network.failures = [ConnectFailed("forbidden", 403)]
    conn.hang_up()
    with pytest.raises(SealpostError) as info:
        await transport.next_push()
    assert info.value.code is ErrorCode.UNAUTHORIZED
    await transport.close()


async def test_start_reports_failure_without_retrying(network: ScriptedNetwork) -> None:
    network.failures = [ConnectFailed("connection refused")]
    transport = transport_on(network)
    with pytest.raises(SealpostError) as info:
        await transport.start()
    assert info.value.code is LocalErrorCode.UNREACHABLE
    network.failures = [ConnectFailed("forbidden", 403)]
    with pytest.raises(SealpostError) as info:
        await transport.start()
    assert info.value.code is ErrorCode.UNAUTHORIZED


async def test_keepalive_pings_and_drops_a_silent_connection(network: ScriptedNetwork) -> None:
    transport = transport_on(network, ping_interval=0.01, pong_timeout=0.02)
    await transport.start()
    conn = await network.connection(1)
    [ping] = await conn.next_sent(1)
    assert isinstance(ping, Ping) and ping.request_id > 0
    conn.push(Pong(ping.request_id))
    frames = await conn.next_sent(2)  # answered: the next ping comes on the same connection
    assert isinstance(frames[1], Ping)
    # This one goes unanswered: the transport gives up on the connection and reconnects.
    await network.connection(2)
    await transport.close()


async def test_a_ping_from_the_server_is_answered(network: ScriptedNetwork) -> None:
    transport = transport_on(network)
    await transport.start()
    conn = await network.connection(1)
    conn.push(Ping(77))
    assert await conn.next_sent(1) == [Pong(77)]
    await transport.close()


async def test_close_fails_waiting_requests(network: ScriptedNetwork) -> None:
    transport = transport_on(network)
    await transport.start()
    conn = await network.connection(1)
    pending = asyncio.create_task(transport.request(SEND))
    await conn.next_sent(1)
    await transport.close()
    with pytest.raises(SealpostError) as info:
        await pending
    assert info.value.code is LocalErrorCode.CLOSED


# --- the real websockets client against a real websockets server ---------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_real_websocket_round_trip() -> None:
    seen: dict[str, str | None] = {}

    def select(conn: ServerConnection, offered: Sequence[Subprotocol]) -> Subprotocol | None:
        return Subprotocol("sealpost.v1") if "sealpost.v1" in offered else None

    async def relay(ws: ServerConnection) -> None:
        assert ws.request is not None
        seen["path"] = ws.request.path
        seen["origin"] = ws.request.headers.get("Origin")
        seen["offered"] = ws.request.headers.get("Sec-WebSocket-Protocol")
        await ws.send(encode_frame(QueueEmpty()))
        async for message in ws:
            assert isinstance(message, bytes)
            frame = decode_frame(message)
            if isinstance(frame, Send):
                await ws.send(encode_frame(SendOk(frame.request_id, 42)))

    async with serve(relay, "127.0.0.1", 0, select_subprotocol=select) as server:
        port = server.sockets[0].getsockname()[1]
        transport = Transport(f"http://127.0.0.1:{port}", "abc_DEF-123", backoff=FAST)
        await transport.start()
        assert await transport.next_push() == QueueEmpty()
        reply = await transport.request(SEND)
        assert isinstance(reply, SendOk) and reply.server_time_ms == 42
        await transport.close()
    assert seen == {
        "path": "/ws/v1/",
        "origin": f"http://127.0.0.1:{port}",
        "offered": "sealpost.v1, sealpost.token.abc_DEF-123",
    }


async def test_real_websocket_refusal_and_unreachable_server() -> None:
    def refuse(conn: ServerConnection, request: Request) -> Response:
        return conn.respond(HTTPStatus.FORBIDDEN, "bad token\n")

    async def never(ws: ServerConnection) -> None:  # pragma: no cover - refused before
        pass

    async with serve(never, "127.0.0.1", 0, process_request=refuse) as server:
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(SealpostError) as info:
            await Transport(f"http://127.0.0.1:{port}", "t").start()
        assert info.value.code is ErrorCode.UNAUTHORIZED

    with pytest.raises(SealpostError) as info:
        await Transport(f"http://127.0.0.1:{free_port()}", "t").start()
    assert info.value.code is LocalErrorCode.UNREACHABLE


# --- pipelining ---------------------------------------------------------------------------


async def test_submitted_sends_go_out_in_order_within_the_window(
    network: ScriptedNetwork,
) -> None:
    transport = Transport(
        "https://chat.example", "TOKEN", connector=network, backoff=FAST, max_in_flight=2
    )
    await transport.start()
    conn = await network.connection(1)
    sends = [Send(0, "bob", (DeviceMessage(1, 7, bytes([n])),)) for n in range(4)]
    futures = [transport.submit(send) for send in sends]  # no await in between
    first, second = await conn.next_sent(2)
    await asyncio.sleep(0.01)
    assert len(conn.sent) == 2  # the window is full until an answer comes
    conn.push(SendOk(first.request_id, 1))
    assert await futures[0] == SendOk(first.request_id, 1)
    frames = await conn.next_sent(3)
    assert [f.messages[0].payload for f in frames if isinstance(f, Send)] == [b"\0", b"\1", b"\2"]
    for frame in frames[1:]:
        conn.push(SendOk(frame.request_id, 2))
    frames = await conn.next_sent(4)
    conn.push(SendOk(frames[3].request_id, 3))
    assert [type(await future) for future in futures] == [SendOk] * 4
    await transport.close()


async def test_unanswered_sends_are_written_again_in_order_after_a_reconnect(
    network: ScriptedNetwork,
) -> None:
    transport = Transport(
        "https://chat.example", "TOKEN", connector=network, backoff=FAST, max_in_flight=2
    )
    await transport.start()
    conn = await network.connection(1)
    futures = [
        transport.submit(Send(0, "bob", (DeviceMessage(1, 7, bytes([n])),))) for n in range(3)
    ]
    await conn.next_sent(2)
    conn.hang_up()  # two written and unanswered, one never written
    second = await network.connection(2)
    await second.next_sent(2)
    assert second.sent == conn.sent  # the same bytes, in the same order, first
    for frame in second.frames()[:2]:
        second.push(SendOk(frame.request_id, 1))
    third = (await second.next_sent(3))[2]
    assert isinstance(third, Send) and third.messages[0].payload == b"\2"
    second.push(SendOk(third.request_id, 2))
    assert [type(reply) for reply in await asyncio.gather(*futures)] == [SendOk] * 3
    await transport.close()


async def test_sends_are_paced_below_the_relays_frame_limit(network: ScriptedNetwork) -> None:
    transport = Transport(
        "https://chat.example",
        "TOKEN",
        connector=network,
        backoff=FAST,
        sends_per_second=50.0,
        send_burst=2,
    )
    await transport.start()
    conn = await network.connection(1)
    loop = asyncio.get_running_loop()
    began = loop.time()
    for _ in range(5):
        transport.submit(SEND)
    await conn.next_sent(5)
    # Two at once (the burst), then one every 20 ms.
    assert loop.time() - began >= 0.055
    await transport.close()


async def test_a_cancelled_submission_is_withdrawn(network: ScriptedNetwork) -> None:
    transport = Transport(
        "https://chat.example", "TOKEN", connector=network, backoff=FAST, max_in_flight=1
    )
    await transport.start()
    conn = await network.connection(1)
    first = transport.submit(SEND)
    withdrawn = transport.submit(Send(0, "carol", (DeviceMessage(2, 9, b"x"),)))
    [frame] = await conn.next_sent(1)
    withdrawn.cancel()
    conn.push(SendOk(frame.request_id, 1))
    await first
    await asyncio.sleep(0.01)
    assert len(conn.sent) == 1
    await transport.close()
