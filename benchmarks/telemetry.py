"""What live telemetry costs, and how much of it one `vlt watch` can follow.

1. Publishing cost: benchmarks/overhead.py's zero-latency pipeline replayed in
   real time over the real loopback websocket, in blocks of turns alternating
   without and with ``--mqtt`` to a local Mosquitto (the in-process agent
   publishing every mark, the client every turn, manifest and summary). The
   testbed overhead per turn (voice-to-voice minus the voice's own attack) is
   compared between the two: p50 and p99 and their difference.
2. ``vlt watch``'s capacity: a raw MQTT client publishes marks (QoS 0) at a
   rising rate for a few seconds each; a separate process runs watch's own
   path (subscription → FleetView → the rich table redrawn 4 times a second,
   to a null console) and reports how many arrived and how far behind it
   finished. It keeps up while every mark arrives and it ends < 0.5 s behind.

Run:  .venv/bin/python benchmarks/telemetry.py [--turns 200] [--block 20]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from overhead import ZERO_PIPELINE, pct, zero_scenario  # noqa: E402

from agent import clock as clocks  # noqa: E402
from agent.jobs.runner import run_scenario  # noqa: E402
from agent.stages.pipeline import parse_pipeline  # noqa: E402
from agent.telemetry.broker import parse_broker_url  # noqa: E402
from agent.telemetry.publisher import Telemetry  # noqa: E402
from agent.telemetry.schema import encode, mark_payload  # noqa: E402
from tests.telemetry.mosquitto import make_broker  # noqa: E402


def overhead_block(scenario: Any, pipeline: Any, out: Path, telemetry: Telemetry | None) -> list[float]:
    async def main(clock: clocks.Clock) -> Any:
        return await run_scenario(scenario, clock, pipeline=pipeline, run_dir=out, telemetry=telemetry)

    result = clocks.run(main)
    ok = [r for r in result.records if r["status"] == "ok"]
    return [r["latency_ms"]["voice_to_voice"] - r["latency_ms"]["audio_onset"] for r in ok]


def publishing_cost(url: str, turns: int, block: int, tmp: Path) -> dict[str, Any]:
    zero = parse_pipeline(ZERO_PIPELINE, "zero-latency.toml")
    scenario = zero_scenario(block, tmp / "block.yaml")
    without: list[float] = []
    with_mqtt: list[float] = []
    with Telemetry(parse_broker_url(url)) as telemetry:
        for i in range(turns // block):
            # Alternate which goes first, so a drift in the machine's load favours neither.
            order = [(None, without), (telemetry, with_mqtt)]
            for t, into in order if i % 2 == 0 else order[::-1]:
                into += overhead_block(scenario, zero, tmp / f"b{i}-{t is not None}", t)
        sent, dropped = telemetry.totals()
    return {
        "turns": len(without),
        "without_p50_ms": pct(without, 50),
        "without_p99_ms": pct(without, 99),
        "with_p50_ms": pct(with_mqtt, 50),
        "with_p99_ms": pct(with_mqtt, 99),
        "sent": sent,
        "dropped": dropped,
    }


# -- the watch's capacity -----------------------------------------------------------


def watch_child(url: str, expect: int, idle_s: float) -> None:
    """Runs in its own process: watch's path, counting until ``expect`` or ``idle_s`` of quiet."""
    from rich.console import Console

    from agent.cli.fleet import _render
    from agent.telemetry.fleet import FleetView
    from agent.telemetry.subscriber import subscription

    broker = parse_broker_url(url)
    view = FleetView()
    console = Console(file=io.StringIO(), width=160)

    async def main() -> None:
        got, last_draw, last_at = 0, 0.0, 0.0
        async with subscription(broker, "+/+/marks") as messages:
            print("ready", flush=True)
            iterator = messages.__aiter__()
            while got < expect:
                try:
                    message = await asyncio.wait_for(iterator.__anext__(), idle_s)
                except TimeoutError:
                    break
                now = time.monotonic()
                view.update(message, now)
                got, last_at = got + 1, time.time()
                if now - last_draw >= 0.25:
                    console.print(_render(view, now, url))
                    console.file = io.StringIO()
                    last_draw = now
        print(json.dumps({"received": got, "last_at": last_at}), flush=True)

    asyncio.run(main())


def flood(url: str, rate: int, seconds: float) -> tuple[int, float, float]:
    """Publish ``rate`` marks/s for ``seconds`` (10 ms batches) with paho's own client (no
    asyncio: it outpaces one subscriber); (sent, wall time it ended, the rate achieved)."""
    import paho.mqtt.client as mqtt

    broker = parse_broker_url(url)
    payloads = [
        encode(mark_payload("bench", "flood", i // 12, "llm.first_token", i, i + 1)) for i in range(1000)
    ]
    topic = f"{broker.prefix}/bench/flood/marks"
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.max_queued_messages_set(0)
    client.connect(broker.host, broker.port)
    client.loop_start()
    sent = 0
    start = time.monotonic()
    for b in range(int(seconds * 100)):
        target = rate * (b + 1) // 100
        while sent < target:
            client.publish(topic, payloads[sent % 1000], qos=0)
            sent += 1
        delay = start + (b + 1) / 100 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    achieved = sent / (time.monotonic() - start)
    ended = time.time()
    client.loop_stop()
    client.disconnect()
    return sent, ended, achieved


def watch_capacity(url: str, rates: list[int], seconds: float) -> list[dict[str, Any]]:
    rows = []
    for rate in rates:
        child = subprocess.Popen(
            [sys.executable, __file__, "--watch-child", url, "--expect", str(int(rate * seconds))],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        sent, ended, achieved = flood(url, rate, seconds)
        report = json.loads(child.stdout.readline())
        child.wait(30)
        behind = max(0.0, report["last_at"] - ended) if report["received"] else None
        row = {"rate": rate, "achieved": achieved, "sent": sent, "received": report["received"]}
        rows.append({**row, "behind_s": behind})
    return rows


def print_cost(cost: dict[str, Any], block: int) -> None:
    diff50 = cost["with_p50_ms"] - cost["without_p50_ms"]
    diff99 = cost["with_p99_ms"] - cost["without_p99_ms"]
    print(f"publishing cost: testbed overhead, {cost['turns']} turns each, alternating blocks of {block}")
    print(f"{'':<28}{'p50 ms':>9}{'p99 ms':>9}")
    print(f"{'without --mqtt':<28}{cost['without_p50_ms']:>9.2f}{cost['without_p99_ms']:>9.2f}")
    print(f"{'with --mqtt (local broker)':<28}{cost['with_p50_ms']:>9.2f}{cost['with_p99_ms']:>9.2f}")
    print(f"{'difference':<28}{diff50:>+9.2f}{diff99:>+9.2f}   target: p99 difference <= 0.5 ms")
    print(f"messages: {cost['sent']} sent, {cost['dropped']} dropped")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--block", type=int, default=20, help="turns per block (blocks alternate)")
    parser.add_argument("--rates", default="1000,5000,10000,20000,40000", help="marks/s to try")
    parser.add_argument("--seconds", type=float, default=3.0, help="per rate")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--watch-child", help=argparse.SUPPRESS)
    parser.add_argument("--expect", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.watch_child:
        watch_child(args.watch_child, args.expect, idle_s=2.0)
        return

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        broker = make_broker(tmp / "broker")
        try:
            cost = publishing_cost(broker.url(), args.turns, args.block, tmp) if args.turns else None
            capacity = watch_capacity(broker.url(), [int(r) for r in args.rates.split(",")], args.seconds)
        finally:
            broker.kill()

    if cost is not None:
        print_cost(cost, args.block)
    print(f"vlt watch (table path) vs marks/s, {args.seconds:g} s each")
    print(f"{'target/s':>9}{'achieved/s':>11}{'sent':>9}{'received':>10}{'behind s':>10}  keeps up")
    for row in capacity:
        behind = row["behind_s"]
        keeps = row["received"] == row["sent"] and behind is not None and behind < 0.5
        shown = "-" if behind is None else f"{behind:.2f}"
        print(
            f"{row['rate']:>9}{row['achieved']:>11.0f}{row['sent']:>9}{row['received']:>10}{shown:>10}"
            f"  {'yes' if keeps else 'no'}"
        )
    if args.json:
        args.json.write_text(json.dumps({"cost": cost, "watch": capacity}, indent=2) + "\n")


if __name__ == "__main__":
    main()
