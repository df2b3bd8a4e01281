"""``--mqtt URL`` and its TLS options, shared by every command that publishes or reads telemetry.

Parsing the URL is pure; the MQTT client library (aiomqtt) is imported only
once a command has been given ``--mqtt`` (agent/telemetry, docs/telemetry.md).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from agent.errors import ConfigError

if TYPE_CHECKING:
    from agent.telemetry.broker import BrokerUrl
    from agent.telemetry.publisher import Telemetry

__all__ = ["add_mqtt_options", "broker_from_args", "telemetry_from_args"]

log = logging.getLogger("vlt.telemetry")


def add_mqtt_options(parser: argparse.ArgumentParser, *, required: bool = False) -> None:
    group = parser.add_argument_group("live telemetry (MQTT, docs/telemetry.md)")
    group.add_argument(
        "--mqtt",
        metavar="URL",
        required=required,
        help="broker: mqtt://[user:pass@]host[:port][/prefix] or mqtts://… (default port 1883/8883, "
        "prefix vlt)" + ("" if required else "; publish marks and turns there as they happen"),
    )
    group.add_argument("--mqtt-ca", type=Path, metavar="FILE", help="mqtts: CA certificate(s) to trust")
    group.add_argument("--mqtt-cert", type=Path, metavar="FILE", help="mqtts: client certificate")
    group.add_argument("--mqtt-key", type=Path, metavar="FILE", help="mqtts: the client certificate's key")
    group.add_argument(
        "--mqtt-insecure",
        action="store_true",
        help="mqtts: accept any server certificate (encrypted, not authenticated)",
    )


def broker_from_args(args: argparse.Namespace) -> BrokerUrl | None:
    """The broker ``--mqtt`` names (None without it); a bad URL or TLS option is a ConfigError."""
    from agent.telemetry.broker import TlsOptions, parse_broker_url

    tls = TlsOptions(args.mqtt_ca, args.mqtt_cert, args.mqtt_key, args.mqtt_insecure)
    if args.mqtt is None:
        if tls != TlsOptions():
            raise ConfigError("--mqtt-ca/--mqtt-cert/--mqtt-key/--mqtt-insecure need --mqtt")
        return None
    broker = parse_broker_url(args.mqtt, tls)
    if broker.tls is not None:
        broker.tls.context()  # unreadable files fail now, not on the telemetry thread
    return broker


@contextlib.contextmanager
def telemetry_from_args(args: argparse.Namespace) -> Iterator[Telemetry | None]:
    """The process's publisher while the block runs (None without ``--mqtt``)."""
    broker = broker_from_args(args)
    if broker is None:
        yield None
        return
    from agent.telemetry.publisher import Telemetry

    with Telemetry(broker) as telemetry:
        yield telemetry
    sent, dropped = telemetry.totals()
    log.info("telemetry to %s: %d sent, %d dropped", broker.display, sent, dropped)
