"""Run an asyncio service (the netem proxy, the balancer) on its own event loop in a
background thread, for synchronous callers: pytest tests and benchmarks."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from typing import Any, Protocol


class AsyncService(Protocol):
    async def start(self) -> Any: ...
    async def stop(self) -> None: ...


@contextlib.contextmanager
def running_in_background[S: AsyncService](service: S, name: str) -> Iterator[S]:
    """Yields ``service`` once its ``start()`` returned; stops it and the loop on exit."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name=name, daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(service.start(), loop).result(timeout=10)
        yield service
    finally:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(service.stop(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
