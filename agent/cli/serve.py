"""``vlt serve``: the voice agent, a pipeline's ASR or TTS stage as a service, the LLM emulator."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

from agent.cli.arguments import Subcommands, check_port, finite_float
from agent.cli.exit_codes import EXIT_OK
from agent.cli.mqtt_options import add_mqtt_options, telemetry_from_args
from agent.errors import ConfigError
from agent.stages.pipeline_names import DEFAULT_PIPELINE, resolve_pipeline

if TYPE_CHECKING:
    from agent.server.limits import ServerLimits

__all__ = ["add_serve_commands"]


def add_serve_commands(commands: Subcommands) -> None:
    sp = commands.add_parser("serve", help="run a server", description="Run one of the testbed's servers.")
    servers = sp.add_subparsers(dest="server", metavar="SERVER", required=True)
    _add_agent(servers)
    _add_llm_emulator(servers)
    _add_stage_services(servers)


# -- the websocket voice agent ----------------------------------------------------------


def _add_agent(servers: Subcommands) -> None:
    ap = servers.add_parser(
        "agent",
        help="the websocket voice agent",
        description="Serve the voice agent defined by a pipeline over the websocket protocol.",
    )
    ap.add_argument("--pipeline", default=DEFAULT_PIPELINE, help="pipeline TOML (path or name)")
    ap.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    _add_limits(ap)
    add_mqtt_options(ap)
    ap.set_defaults(func=_cmd_serve_agent)


# Each ServerLimits field as an option (docs/protocol.md, "Limits"): (flag, type, help).
_LIMIT_OPTIONS = (
    ("max_sessions", int, "sessions served at once; more are refused with server_busy"),
    ("handshake_timeout_s", float, "seconds from connecting to the client's hello"),
    ("idle_timeout_s", float, "seconds without any frame after hello before the session ends"),
    ("max_scripts", int, "script messages held at once per session"),
    ("script_retention_s", float, "seconds of audio behind which old scripts are dropped"),
    ("max_script_chars", int, "characters of text + reply in one script"),
    ("max_audio_ahead_s", float, "seconds upstream audio may run ahead of real time (pending audio)"),
    ("max_logged_chars", int, "characters of a client's error/interrupt text logged or echoed"),
    ("max_json_depth", int, "deepest array/object nesting in a text frame"),
    ("max_pending_requests", int, "TTS service: synthesize requests queued at once"),
    ("max_synthesize_chars", int, "TTS service: characters of text in one synthesize request"),
)
#: The limits each server applies (the rest do not concern it).
_AGENT_LIMITS = tuple(
    n for n, _, _ in _LIMIT_OPTIONS if n not in ("max_pending_requests", "max_synthesize_chars")
)
_SERVICE_LIMITS = {
    "asr": ("max_sessions", "handshake_timeout_s", "idle_timeout_s", "max_json_depth"),
    "tts": (
        "max_sessions",
        "handshake_timeout_s",
        "max_json_depth",
        "max_pending_requests",
        "max_synthesize_chars",
    ),
}


def _add_limits(ap: argparse.ArgumentParser, names: tuple[str, ...] = _AGENT_LIMITS) -> None:
    from agent.server.limits import ServerLimits  # a dataclass only: no server imports

    defaults = ServerLimits()
    group = ap.add_argument_group("limits per client (docs/protocol.md)")
    for name, kind, text in _LIMIT_OPTIONS:
        if name not in names:
            continue
        flag = "--" + name.replace("_", "-")
        group.add_argument(
            flag, type=kind, dest=f"limit_{name}", help=f"{text} (default {getattr(defaults, name):g})"
        )


def _limits(args: argparse.Namespace) -> ServerLimits:
    from agent.server.limits import ServerLimits

    given = {name: getattr(args, f"limit_{name}", None) for name, _, _ in _LIMIT_OPTIONS}
    try:
        return ServerLimits(**{k: v for k, v in given.items() if v is not None})
    except ConfigError as exc:
        flag = "--" + (exc.field or "").replace("_", "-")
        raise ConfigError(f"{flag}: {exc.reason}") from None


def _cmd_serve_agent(args: argparse.Namespace) -> int:
    from agent import clock as clocks
    from agent.server.app import AgentServer
    from agent.stages.pipeline import load_pipeline

    check_port(args.port)
    limits = _limits(args)
    pipeline = load_pipeline(resolve_pipeline(args.pipeline))

    with telemetry_from_args(args) as telemetry:

        async def main(clock: clocks.Clock) -> None:
            async with AgentServer(
                pipeline, clock, args.host, args.port, limits=limits, telemetry=telemetry
            ) as server:
                print(f"agent ({pipeline.name}) listening on {server.url}", flush=True)
                await server.serve_forever()

        with contextlib.suppress(KeyboardInterrupt):
            clocks.run(main)
    return EXIT_OK


# -- the accelerator emulator (docs/accelerators.md) ------------------------------------


def _add_llm_emulator(servers: Subcommands) -> None:
    # Not from agent.server.llm_emulator: that would import aiohttp on every `vlt` call.
    from agent.config.accelerators import DEFAULT_PROFILE

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
    ep.add_argument("--ttft-ms", type=finite_float, help="base latency to the first token, before prefill")
    ep.add_argument("--tps", type=finite_float, help="single-stream decode speed, tokens/s")
    ep.add_argument("--jitter", type=finite_float, help="relative standard deviation of inter-token gaps")
    ep.add_argument("--ttft-jitter-ms", type=finite_float, help="standard deviation of the base latency")
    ep.add_argument("--prefill-tps", type=finite_float, help="prompt processing speed, tokens/s")
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


def _cmd_serve_llm_emulator(args: argparse.Namespace) -> int:
    from agent import clock as clocks
    from agent.config.accelerator_timing import stream_tokens_per_s
    from agent.config.accelerators import add_profiles, get_profile, with_overrides
    from agent.server.llm_emulator import LLMEmulatorServer
    from agent.server.llm_text_sources import make_text_source

    check_port(args.port)
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


# -- standalone ASR / TTS services (docs/speech.md, "Remote services") ------------------


def _add_stage_services(servers: Subcommands) -> None:
    for service, port in (("asr", 8766), ("tts", 8767)):
        sv = servers.add_parser(
            service,
            help=f"a pipeline's {service.upper()} stage as a websocket service (for remote-{service})",
            description=f"Serve the [{service}] stage of a pipeline over the service protocol of "
            f'docs/speech.md; a pipeline reaches it with kind = "remote-{service}".',
        )
        sv.add_argument("--pipeline", default=DEFAULT_PIPELINE, help="pipeline TOML (path or name)")
        sv.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
        sv.add_argument("--port", type=int, default=port, help=f"port (default {port}; 0 picks a free one)")
        _add_limits(sv, _SERVICE_LIMITS[service])
        sv.set_defaults(func=_cmd_serve_service, service=service)


def _cmd_serve_service(args: argparse.Namespace) -> int:
    from agent import clock as clocks
    from agent.server.services import StageService
    from agent.stages.pipeline import load_pipeline

    check_port(args.port)
    limits = _limits(args)
    pipeline = load_pipeline(resolve_pipeline(args.pipeline))

    async def main(clock: clocks.Clock) -> None:
        async with StageService(
            pipeline, args.service, clock, args.host, args.port, limits=limits
        ) as service:
            kind = pipeline.stages[args.service].kind
            print(f"{args.service} service ({pipeline.name}: {kind}) listening on {service.url}", flush=True)
            await service.serve_forever()

    with contextlib.suppress(KeyboardInterrupt):
        clocks.run(main)
    return EXIT_OK
