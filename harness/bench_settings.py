"""Settings for benchmark servers: the project's own, with the differences listed below.

1. Password hashing. A benchmark registers hundreds of throwaway accounts. With the
   project's hasher (PBKDF2, 1.5 million iterations: about 1 s of CPU per sign-up on this
   kind of machine) that set-up alone would take minutes and says nothing about the
   relay, which never hashes a password. So benchmark servers hash with MD5, as Django's
   own test suites do.
2. Redis connection defaults (only with REDIS_URL). redis-py 8 (which requirements.txt
   does not pin; channels-redis pulls in the newest) changed two defaults that break
   channels_redis under load:

   * a 5 s socket timeout: channels_redis waits for a consumer's next event with a
     blocking BZPOPMIN of 5 s, so every consumer that hears nothing for 5 s dies with
     ``redis.exceptions.TimeoutError`` and its WebSocket is closed with 1011
     (django/channels_redis#422);
   * at most 100 connections per pool, failing at once (``MaxConnectionsError: Too many
     connections``) rather than waiting: when more than 100 consumers of one process
     touch the layer at the same moment (a crowd connecting or disconnecting, a burst of
     group sends), the extra ones die the same way.

   Until project/settings.py (or a pin of redis below 8) deals with both, the bench
   restores redis-py 7's defaults (no socket timeout, no practical pool limit) so that a
   scale run measures the relay rather than reconnections. ``BENCH_REDIS_AS_SHIPPED=1``
   turns this off to show the failures.

Nothing else differs: the relay, the database settings (SQLite WAL with
synchronous=FULL, or the given DATABASE_URL), the channel layer's capacity and every
limit are the project's; limits are changed only through the environment (see
bench/relay_bench.py).

Never use this module for a server that holds real accounts.
"""

import os
from typing import Any

from project.settings import *  # noqa: F403
from project.settings import CHANNEL_LAYERS, REDIS_URL

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

if REDIS_URL and os.environ.get("BENCH_REDIS_AS_SHIPPED") != "1":
    _layer: dict[str, Any] = CHANNEL_LAYERS["default"]
    _layer["CONFIG"]["hosts"] = [
        {"address": REDIS_URL, "socket_timeout": None, "max_connections": 2**31 - 1}
    ]
