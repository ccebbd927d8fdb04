"""The embedded default's channel layer: Channels' in-memory layer with its sweep bounded.

Channels' ``InMemoryChannelLayer`` sweeps every channel and every group for expired
messages and memberships on every ``receive`` and every ``group_send``: each message the
relay fans out cost two passes over all the connections of the process (with 2,000
connected devices, thousands of dictionary entries per message). Expiry here is measured
in seconds (``expiry``, 60 s) and hours (``group_expiry``), so this layer sweeps at most
once a second; an expired message may then be handed out up to a second late, which
nothing depends on (the relay's events are hints; the database is the queue).

``group_send`` also hands the message to each member in turn instead of making a task per
member: an in-memory send never waits, so the tasks bought nothing. A full channel still
drops the message for that member only, as before.
"""

from __future__ import annotations

import time
from typing import Any

from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer as ChannelsInMemoryChannelLayer

SWEEP_INTERVAL_SECONDS = 1.0


class InMemoryChannelLayer(ChannelsInMemoryChannelLayer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._swept_at = 0.0

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now - self._swept_at < SWEEP_INTERVAL_SECONDS:
            return
        self._swept_at = now
        super()._clean_expired()

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "message is not a dict"  # noqa: S101 (as Channels)
        self.require_valid_group_name(group)
        self._clean_expired()
        for channel in list(self.groups.get(group, ())):
            try:
                await self.send(channel, message)
            except ChannelFull:
                pass
