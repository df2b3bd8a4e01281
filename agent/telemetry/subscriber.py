"""The receiving side: ``vlt watch``, ``vlt record`` and ``--wait-start``.

These run on their own real-time loop (never a replay's virtual one). A
broker that cannot be reached or refuses the credentials is a one-line
:class:`~agent.errors.ConnectError`: unlike a publisher, a subscriber is
useless without it.
"""

from __future__ import annotations

import contextlib
import platform
from collections.abc import AsyncIterator, Callable
from typing import Any

from agent.clock import utc_now
from agent.errors import ConnectError
from agent.telemetry.broker import BrokerUrl
from agent.telemetry.schema import START_TOPIC, Incoming, decode, encode, start_payload

__all__ = ["publish_start", "subscription", "wait_for_start"]

_AUTH_CODES = frozenset({4, 5, 134, 135})


def _client(broker: BrokerUrl, role: str) -> Any:
    import aiomqtt

    return aiomqtt.Client(
        broker.host,
        broker.port,
        username=broker.username,
        password=broker.password,
        identifier=None,
        timeout=5.0,
        tls_context=broker.tls.context() if broker.tls else None,
        tls_insecure=broker.tls.insecure if broker.tls else None,
    )


def _connect_error(broker: BrokerUrl, exc: Exception) -> ConnectError:
    rc = getattr(exc, "rc", None)
    code = getattr(rc, "value", rc)
    hint = ""
    if code in _AUTH_CODES:
        hint = "; the broker refused the credentials: give user:password@ in the --mqtt URL"
    return ConnectError(f"MQTT broker {broker.display}: {exc}{hint}")


@contextlib.asynccontextmanager
async def subscription(broker: BrokerUrl, pattern: str = "#") -> AsyncIterator[AsyncIterator[Incoming]]:
    """``async with subscription(b) as messages: async for m in messages``: every
    telemetry message under the broker's prefix (retained ones first), decoded."""
    import aiomqtt

    client = _client(broker, "sub")
    try:
        await client.__aenter__()
    except aiomqtt.MqttError as exc:
        raise _connect_error(broker, exc) from None
    try:
        await client.subscribe(f"{broker.prefix}/{pattern}", qos=1)

        async def messages() -> AsyncIterator[Incoming]:
            try:
                async for message in client.messages:
                    payload = message.payload
                    data = payload if isinstance(payload, bytes | bytearray) else str(payload or "").encode()
                    incoming = decode(broker.prefix, str(message.topic), bytes(data), bool(message.retain))
                    if incoming is not None:
                        yield incoming
            except aiomqtt.MqttError as exc:
                raise ConnectError(f"MQTT broker {broker.display}: connection lost ({exc})") from None

        yield messages()
    finally:
        with contextlib.suppress(Exception):
            await client.__aexit__(None, None, None)


async def publish_start(broker: BrokerUrl, run: str = "") -> None:
    """The start signal: load generators waiting with ``--wait-start`` begin."""
    import aiomqtt

    payload = encode(start_payload(utc_now().isoformat(), platform.node() or "watch", run))
    try:
        async with _client(broker, "start") as client:
            await client.publish(f"{broker.prefix}/{START_TOPIC}", payload, qos=1)
    except aiomqtt.MqttError as exc:
        raise _connect_error(broker, exc) from None


async def wait_for_start(broker: BrokerUrl, on_ready: Callable[[], None] = lambda: None) -> dict[str, Any]:
    """Return the first start signal published after subscribing (not a stale one);
    ``on_ready`` is called once subscribed (a signal from then on is not missed)."""
    async with subscription(broker, START_TOPIC) as messages:
        on_ready()
        async for message in messages:
            if message.type == "start" and not message.retained:
                return message.data
    raise ConnectError(f"MQTT broker {broker.display}: the subscription ended before a start signal")
