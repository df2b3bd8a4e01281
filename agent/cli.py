"""``vlt``: the command-line entry point.

Every :class:`~agent.errors.VltError` becomes one clear line on stderr and exit
status 2 (no traceback unless ``--debug``); expectation failures in a replay
exit with 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent import __version__
from agent.errors import ConfigError, VltError

__all__ = ["DEFAULT_PIPELINE", "main", "resolve_pipeline"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
#: The embedded default: runs with no models, keys or servers.
DEFAULT_PIPELINE = "emulated"

EXIT_OK, EXIT_FAILED, EXIT_ERROR = 0, 1, 2


def resolve_pipeline(name_or_path: str) -> Path:
    """A path as given, or a bare name looked up in ``./pipelines`` and the project's."""
    path = Path(name_or_path)
    if path.exists() or path.suffix or "/" in name_or_path:
        return path
    for folder in (Path.cwd() / "pipelines", PROJECT_ROOT / "pipelines"):
        candidate = folder / f"{name_or_path}.toml"
        if candidate.exists():
            return candidate
    raise ConfigError(
        f"no pipeline named {name_or_path!r} (looked in ./pipelines and {PROJECT_ROOT / 'pipelines'})"
    )


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlt",
        description="Voice Latency Testbed: measure where a voice agent's silence comes from.",
    )
    parser.add_argument("--version", action="version", version=f"vlt {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    rp = commands.add_parser(
        "replay",
        help="speak a scenario into an agent and measure every turn",
        description="Replay a scripted conversation into an agent over the websocket protocol "
        "and write a run folder (turns.jsonl, summary.json, manifest.json, recording.wav).",
    )
    rp.add_argument("scenario", type=Path, help="scenario YAML file")
    target = rp.add_mutually_exclusive_group()
    target.add_argument(
        "--pipeline",
        default=None,
        help=f"pipeline TOML (path or name in pipelines/) served in-process; default: {DEFAULT_PIPELINE}",
    )
    target.add_argument("--url", help="ws:// URL of a running agent instead of an in-process one")
    rp.add_argument(
        "--clock",
        choices=("real", "virtual"),
        default="real",
        help="virtual: deterministic, much faster than real time (all-emulated pipelines only)",
    )
    rp.add_argument(
        "--runs-dir", type=Path, default=Path("runs"), help="where run folders go (default: runs/)"
    )
    rp.add_argument("--out", type=Path, default=None, help="exact run folder to write (overrides --runs-dir)")
    rp.add_argument("--quiet", action="store_true", help="print only the run folder and the summary")
    rp.set_defaults(func=_cmd_replay)

    sp = commands.add_parser("serve", help="run a server", description="Run one of the testbed's servers.")
    servers = sp.add_subparsers(dest="server", metavar="SERVER", required=True)
    ap = servers.add_parser(
        "agent",
        help="the websocket voice agent",
        description="Serve the voice agent defined by a pipeline over the websocket protocol.",
    )
    ap.add_argument("--pipeline", default=DEFAULT_PIPELINE, help="pipeline TOML (path or name)")
    ap.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    ap.set_defaults(func=_cmd_serve_agent)
    _add_llm_emulator_commands(commands, servers)
    return parser


def _cmd_replay(args: argparse.Namespace) -> int:
    from agent import clock as clocks
    from agent.console import LEGEND, format_header, format_summary, format_turn
    from agent.pipeline import load_pipeline
    from agent.runner import run_scenario
    from agent.scenario import load_scenario

    scenario = load_scenario(args.scenario)
    pipeline = None
    if args.url is None:
        pipeline = load_pipeline(resolve_pipeline(args.pipeline or DEFAULT_PIPELINE))
    target = args.url or f"pipeline {pipeline.name if pipeline else ''} (in-process)"
    if not args.quiet:
        print(f"replaying {scenario.name} ({len(scenario.turns)} turns) against {target}, {args.clock} time")
        print(format_header())

    def on_turn(record: dict[str, Any]) -> None:
        if not args.quiet:
            print(format_turn(record), flush=True)

    async def main(clock: clocks.Clock) -> Any:
        return await run_scenario(
            scenario,
            clock,
            pipeline=pipeline,
            url=args.url,
            runs_root=args.runs_dir,
            run_dir=args.out,
            on_turn=on_turn,
        )

    result = clocks.run(main, virtual=args.clock == "virtual")
    if not args.quiet:
        print(LEGEND)
        print()
    print(format_summary(result.summary))
    if result.offset is not None and not args.quiet:
        offset = result.offset
        print(f"clock offset {offset.offset_ns / 1e6:+.3f} ms ± {offset.uncertainty_ns / 1e6:.3f} ms")
    print(f"results: {result.run_dir}")
    return EXIT_FAILED if result.summary["expectations_failed"] else EXIT_OK


def _cmd_serve_agent(args: argparse.Namespace) -> int:
    from agent import clock as clocks
    from agent.pipeline import load_pipeline
    from agent.server.app import AgentServer

    pipeline = load_pipeline(resolve_pipeline(args.pipeline))

    async def main(clock: clocks.Clock) -> None:
        async with AgentServer(pipeline, clock, args.host, args.port) as server:
            print(f"agent ({pipeline.name}) listening on {server.url}", flush=True)
            await server.serve_forever()

    with contextlib.suppress(KeyboardInterrupt):
        clocks.run(main)
    return EXIT_OK


# -- the accelerator emulator and its profiles (docs/accelerators.md) ------------------


def _add_llm_emulator_commands(commands: Any, servers: Any) -> None:
    # Not from agent.server.llm_emulator: that would import aiohttp on every `vlt` call.
    from agent.accelerators import DEFAULT_PROFILE

    ep = servers.add_parser(
        "llm-emulator",
        help="an OpenAI-compatible LLM server timed like an accelerator profile",
        description="Serve /v1/chat/completions (streaming and not), /v1/models and /health, with "
        "TTFT, tokens/s, jitter and contention following an accelerator profile (vlt profiles). "
        "The flags below override the profile's numbers.",
    )
    ep.add_argument(
        "--profile", default=DEFAULT_PROFILE, help=f"accelerator profile (default {DEFAULT_PROFILE})"
    )
    ep.add_argument("--profiles-file", type=Path, help="TOML file of extra profiles (docs/accelerators.md)")
    ep.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    ep.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    ep.add_argument("--ttft-ms", type=float, help="base latency to the first token, before prefill")
    ep.add_argument("--tps", type=float, help="single-stream decode speed, tokens/s")
    ep.add_argument("--jitter", type=float, help="relative standard deviation of inter-token gaps")
    ep.add_argument("--ttft-jitter-ms", type=float, help="standard deviation of the base latency")
    ep.add_argument("--prefill-tps", type=float, help="prompt processing speed, tokens/s")
    ep.add_argument(
        "--text-source",
        choices=("scripted", "bank", "llamacpp"),
        default="scripted",
        help="scripted: the reply the testbed's client sends, else the built-in bank (default); "
        "bank: always the bank; llamacpp: a local GGUF model, re-paced to the profile",
    )
    ep.add_argument("--model-path", help="GGUF file for --text-source llamacpp (default: SmolLM2-135M)")
    ep.add_argument("--tokens-per-chunk", type=int, default=1, help="tokens per SSE chunk (default 1)")
    ep.add_argument("--seed", type=int, default=0, help="seed of the jitter (default 0)")
    ep.add_argument("--access-log", action="store_true", help="log every request (with --debug)")
    ep.set_defaults(func=_cmd_serve_llm_emulator)

    pp = commands.add_parser(
        "profiles",
        help="list the accelerator profiles",
        description="List the accelerator profiles the emulator and the emulated LLM stage know, "
        "with where each number comes from. All figures are approximate.",
    )
    pp.add_argument("--profiles-file", type=Path, help="TOML file of extra profiles to include")
    pp.add_argument("--markdown", action="store_true", help="print a Markdown table")
    pp.add_argument("--notes", action="store_true", help="also print each profile's notes")
    pp.set_defaults(func=_cmd_profiles)


def _cmd_serve_llm_emulator(args: argparse.Namespace) -> int:
    from agent import clock as clocks
    from agent.accelerators import add_profiles, get_profile, stream_tokens_per_s, with_overrides
    from agent.server.llm_emulator import LLMEmulatorServer, make_text_source

    if args.profiles_file is not None:
        add_profiles(args.profiles_file)
    flags = {
        "ttft_ms": args.ttft_ms,
        "tokens_per_s": args.tps,
        "jitter": args.jitter,
        "ttft_jitter_ms": args.ttft_jitter_ms,
        "prefill_tokens_per_s": args.prefill_tps,
    }
    profile = with_overrides(get_profile(args.profile), {k: v for k, v in flags.items() if v is not None})
    if args.tokens_per_chunk < 1:
        raise ConfigError(f"--tokens-per-chunk must be >= 1, got {args.tokens_per_chunk}")

    async def main(clock: clocks.Clock) -> None:
        source = make_text_source(args.text_source, clock, model_path=args.model_path)
        server = LLMEmulatorServer(
            profile,
            clock,
            args.host,
            args.port,
            text_source=source,
            tokens_per_chunk=args.tokens_per_chunk,
            seed=args.seed,
            access_log=args.access_log,
        )
        async with server:
            prefill = (
                f" + prompt at {profile.prefill_tokens_per_s:,.0f} tok/s"
                if profile.prefill_tokens_per_s
                else ""
            )
            print(
                f"llm emulator ({profile.name}: TTFT {profile.ttft_ms:g} ms{prefill}, "
                f"{stream_tokens_per_s(profile, 1):g} tok/s, text {source.name}) "
                f"listening on {server.base_url}",
                flush=True,
            )
            await server.serve_forever()

    with contextlib.suppress(KeyboardInterrupt):
        clocks.run(main)
    return EXIT_OK


def _cmd_profiles(args: argparse.Namespace) -> int:
    from agent.accelerators import PROFILES, format_profiles_table, load_profiles

    profiles = load_profiles(args.profiles_file) if args.profiles_file is not None else PROFILES
    print(format_profiles_table(profiles, markdown=args.markdown))
    if args.notes:
        print()
        for profile in sorted(profiles.values(), key=lambda p: p.name):
            print(f"{profile.name}: {profile.notes or '-'}")
    print()
    print("All figures are approximate (docs/accelerators.md). Prefill adds to the base TTFT.")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.debug:
        logging.getLogger("websockets").setLevel(logging.CRITICAL)
    try:
        code: int = args.func(args)
        return code
    except VltError as exc:
        if args.debug:
            raise
        print(f"vlt: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("vlt: interrupted; finished turns are on disk", file=sys.stderr)
        return 130
    except asyncio.CancelledError:
        print("vlt: cancelled", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
