"""``vlt``: the command-line entry point.

Every :class:`~agent.errors.VltError` becomes one clear line on stderr and exit
status 2 (no traceback unless ``--debug``); expectation failures in a replay
exit with 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent import __version__
from agent.errors import ConfigError, VltError

__all__ = ["DEFAULT_PIPELINE", "VIRTUAL_DEFAULT_PIPELINE", "main", "resolve_pipeline"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
#: The embedded default: real VAD, ASR and TTS on the CPU (models ship in PyPI
#: packages, extra ``speech``) and the accelerator-emulated LLM; no keys or servers.
DEFAULT_PIPELINE = "default"
#: What ``--clock virtual`` replays when no pipeline is named: real models
#: compute in real time, so virtual time needs the all-emulated pipeline.
VIRTUAL_DEFAULT_PIPELINE = "emulated"

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
        help=f"pipeline TOML (path or name in pipelines/) served in-process; default: {DEFAULT_PIPELINE} "
        f"({VIRTUAL_DEFAULT_PIPELINE} with --clock virtual)",
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
    _add_regression_commands(commands)
    _add_service_commands(servers)
    _add_sweep_commands(commands)
    _add_audio_device_commands(commands)
    _add_demo_command(commands)
    return parser


def _cmd_replay(args: argparse.Namespace) -> int:
    from agent import clock as clocks
    from agent.config.scenario import load_scenario
    from agent.jobs.runner import run_scenario
    from agent.report.console import LEGEND, format_header, format_summary, format_turn
    from agent.stages.pipeline import load_pipeline

    scenario = load_scenario(args.scenario)
    pipeline = None
    if args.url is None:
        default = VIRTUAL_DEFAULT_PIPELINE if args.clock == "virtual" else DEFAULT_PIPELINE
        pipeline = load_pipeline(resolve_pipeline(args.pipeline or default))
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
    from agent.server.app import AgentServer
    from agent.stages.pipeline import load_pipeline

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
    from agent.config.accelerator_timing import stream_tokens_per_s
    from agent.config.accelerators import add_profiles, get_profile, with_overrides
    from agent.server.llm_emulator import LLMEmulatorServer
    from agent.server.llm_text_sources import make_text_source

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
    from agent.config.accelerators import PROFILES, format_profiles_table, load_profiles

    profiles = load_profiles(args.profiles_file) if args.profiles_file is not None else PROFILES
    print(format_profiles_table(profiles, markdown=args.markdown))
    if args.notes:
        print()
        for profile in sorted(profiles.values(), key=lambda p: p.name):
            print(f"{profile.name}: {profile.notes or '-'}")
    print()
    print("All figures are approximate (docs/accelerators.md). Prefill adds to the base TTFT.")
    return EXIT_OK


# -- latency regression gating (docs/regression.md) -----------------------------------


def _add_regression_commands(commands: Any) -> None:
    bp = commands.add_parser(
        "baseline", help="save latency baselines", description="Manage latency baselines."
    )
    actions = bp.add_subparsers(dest="action", metavar="ACTION", required=True)
    save = actions.add_parser(
        "save",
        help="save run folders' samples as a baseline file",
        description="Store every sample of every metric of one or more run folders (of the same "
        "scenario and pipeline), with their identity and environment, as a baseline JSON file.",
    )
    save.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="run folder(s) to pool")
    save.add_argument("-o", "--output", type=Path, required=True, help="baseline file to write")
    save.set_defaults(func=_cmd_baseline_save)

    rg = commands.add_parser(
        "regress",
        help="compare a candidate run with a baseline; exit 1 on a latency regression",
        description="Run (or read) a candidate and compare each metric x statistic with a baseline: "
        "exactly when both are virtual-time runs, else with a bootstrap CI and a Mann-Whitney U test. "
        "Exit 0 pass, 1 regression, 2 usage or run error.",
    )
    rg.add_argument("--baseline", type=Path, required=True, help="baseline JSON (vlt baseline save)")
    source = rg.add_mutually_exclusive_group(required=True)
    source.add_argument("--scenario", type=Path, help="scenario YAML to run as the candidate")
    source.add_argument(
        "--run", type=Path, nargs="+", metavar="RUN_DIR", help="existing run folder(s) as the candidate"
    )
    target = rg.add_mutually_exclusive_group()
    target.add_argument("--pipeline", help="pipeline TOML (path or name); default: the baseline's pipeline")
    target.add_argument("--url", help="ws:// URL of a running agent instead of an in-process one")
    rg.add_argument(
        "--clock", choices=("real", "virtual"), default=None, help="default: the baseline's clock mode"
    )
    rg.add_argument(
        "--repeat", type=int, default=None, help="replay the scenario N times (default: the baseline's runs)"
    )
    rg.add_argument(
        "--runs-dir", type=Path, default=Path("runs"), help="where candidate runs go (default: runs/)"
    )
    rg.add_argument("--metrics", help="comma-separated metrics (default: all the baseline has samples of)")
    rg.add_argument("--stats", default="p50,p95", help="comma-separated statistics (default: p50,p95)")
    rg.add_argument(
        "--budget-ms",
        action="append",
        default=[],
        metavar="[METRIC=]MS",
        help="allowed slowdown in ms (repeatable; a bare number applies to every metric)",
    )
    rg.add_argument(
        "--budget-pct",
        action="append",
        default=[],
        metavar="[METRIC=]PCT",
        help="allowed slowdown in %% of the baseline value (repeatable)",
    )
    rg.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    rg.add_argument(
        "--mode",
        choices=("auto", "exact", "statistical"),
        default="auto",
        help="auto: exact when both sides are virtual-time runs, else statistical",
    )
    rg.add_argument(
        "--allow-mismatch", action="store_true", help="compare even if scenario or pipeline name differ"
    )
    rg.add_argument("--junit", type=Path, help="write JUnit XML here")
    rg.add_argument("--summary", type=Path, help="write a Markdown summary here (e.g. $GITHUB_STEP_SUMMARY)")
    rg.add_argument("--quiet", action="store_true", help="print only the table")
    rg.set_defaults(func=_cmd_regress)


def _cmd_baseline_save(args: argparse.Namespace) -> int:
    from agent.metrics.baseline import from_runs, save_baseline

    baseline = from_runs(args.run_dirs)
    path = save_baseline(baseline, args.output)
    runs = f"{baseline.runs} run{'s' if baseline.runs != 1 else ''}"
    print(
        f"baseline: {path} ({baseline.scenario_name} x {baseline.pipeline_name}, {baseline.clock} time, "
        f"{baseline.turns} turns from {runs})"
    )
    return EXIT_OK


def _split_list(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _cmd_regress(args: argparse.Namespace) -> int:
    from agent.metrics import baseline as baselines
    from agent.metrics import regress
    from agent.report.regress_output import format_table, junit_xml, markdown_summary

    base = baselines.load_baseline(args.baseline)
    try:
        budget_ms = regress.parse_budgets(args.budget_ms, what="--budget-ms")
        budget_pct = regress.parse_budgets(args.budget_pct, what="--budget-pct")
        stats = tuple(regress.parse_stat(s) for s in _split_list(args.stats) or ())
        metrics = _split_list(args.metrics)
        if metrics is not None:
            metrics = tuple(regress.resolve_metric(m) for m in metrics)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if not stats:
        raise ConfigError("--stats: name at least one statistic (p50, p95, mean …)")
    if not 0 < args.alpha < 1:
        raise ConfigError(f"--alpha must be between 0 and 1, got {args.alpha:g}")
    if args.run is not None:
        if args.pipeline or args.url or args.clock or args.repeat:
            raise ConfigError(
                "--run reads existing runs: --pipeline, --url, --clock and --repeat do not apply"
            )
        candidate = baselines.from_runs(args.run)
    else:
        candidate = _run_candidate(args, base)
    warnings = baselines.check_compatible(
        base, candidate, path=args.baseline, allow_mismatch=args.allow_mismatch
    )
    options = regress.Options(
        metrics=metrics,
        stats=stats,
        budget_ms=budget_ms,
        budget_pct=budget_pct,
        alpha=args.alpha,
        mode=None if args.mode == "auto" else regress.Mode(args.mode),
    )
    try:
        report = regress.compare(base, candidate, options)
    except ValueError as exc:
        raise ConfigError(str(exc), path=args.baseline) from None
    if warnings:
        report = dataclasses.replace(report, warnings=(*warnings, *report.warnings))
    subject = (
        f"{candidate.scenario_name} x {candidate.pipeline_name}, {candidate.clock} time, "
        f"baseline {args.baseline} ({base.runs} run{'s' if base.runs != 1 else ''}), "
        f"candidate {candidate.runs} run{'s' if candidate.runs != 1 else ''}"
    )
    print(format_table(report, subject))
    if args.junit is not None:
        args.junit.parent.mkdir(parents=True, exist_ok=True)
        args.junit.write_text(junit_xml(report, f"vlt.regress.{candidate.scenario_name}", subject), "utf-8")
    if args.summary is not None:
        args.summary.parent.mkdir(parents=True, exist_ok=True)
        with args.summary.open("a", encoding="utf-8") as fh:  # appends, as $GITHUB_STEP_SUMMARY expects
            fh.write(markdown_summary(report, subject))
    return EXIT_FAILED if report.failed else EXIT_OK


def _run_candidate(args: argparse.Namespace, base: Any) -> Any:
    from agent import clock as clocks
    from agent.config.scenario import load_scenario
    from agent.jobs.runner import run_scenario
    from agent.metrics import baseline as baselines
    from agent.metrics.results import new_run_dir
    from agent.stages.pipeline import load_pipeline

    scenario = load_scenario(args.scenario)
    pipeline = None
    if args.url is None:
        pipeline = load_pipeline(resolve_pipeline(args.pipeline or base.pipeline_name))
    clock = args.clock or base.clock
    repeat = args.repeat if args.repeat is not None else base.runs
    if repeat < 1:
        raise ConfigError(f"--repeat must be >= 1, got {repeat}")
    # Fail on a mismatched baseline before spending minutes on real-time runs.
    planned = baselines.Baseline(
        scenario_name=scenario.name,
        scenario_hash=baselines.scenario_hash(scenario.as_dict()),
        pipeline_name=pipeline.name if pipeline else base.pipeline_name,
        pipeline_hash=None,
        clock=clock,
        samples={},
    )
    baselines.check_compatible(base, planned, path=args.baseline, allow_mismatch=args.allow_mismatch)
    target = args.url or f"pipeline {pipeline.name if pipeline else ''}"
    sets = []
    for i in range(repeat):
        run_dir = new_run_dir(args.runs_dir, scenario.name)
        if not args.quiet:
            print(
                f"candidate run {i + 1}/{repeat}: {scenario.name} against {target}, {clock} time -> {run_dir}"
            )

        async def main(clock_: clocks.Clock, run_dir: Path = run_dir) -> Any:
            return await run_scenario(scenario, clock_, pipeline=pipeline, url=args.url, run_dir=run_dir)

        result = clocks.run(main, virtual=clock == "virtual")
        sets.append(baselines.from_run(result.run_dir))
    return baselines.pool(sets)


# -- standalone ASR / TTS services (docs/speech.md, "Remote services") ----------------


def _add_service_commands(servers: Any) -> None:
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
        sv.set_defaults(func=_cmd_serve_service, service=service)


def _cmd_serve_service(args: argparse.Namespace) -> int:
    from agent import clock as clocks
    from agent.server.services import StageService
    from agent.stages.pipeline import load_pipeline

    pipeline = load_pipeline(resolve_pipeline(args.pipeline))

    async def main(clock: clocks.Clock) -> None:
        async with StageService(pipeline, args.service, clock, args.host, args.port) as service:
            kind = pipeline.stages[args.service].kind
            print(f"{args.service} service ({pipeline.name}: {kind}) listening on {service.url}", flush=True)
            await service.serve_forever()

    with contextlib.suppress(KeyboardInterrupt):
        clocks.run(main)
    return EXIT_OK


# -- sweeps and reports (docs/sweeps.md) ----------------------------------------------


def _add_sweep_commands(commands: Any) -> None:
    from agent.jobs.sweep import DEFAULT_TPS, DEFAULT_TTFT_MS

    sw = commands.add_parser(
        "sweep",
        help="replay scenarios across LLM token speeds x TTFTs (or accelerator profiles)",
        description="Replay one or more scenarios at every point of a grid of LLM timings "
        "(tokens/s x TTFT) or of accelerator profiles, write sweep.csv, sweep.json and plots "
        "after every point, and print the latency model's prediction and the knee.",
    )
    sw.add_argument(
        "--scenario", type=Path, action="append", required=True, help="scenario YAML (repeatable)"
    )
    sw.add_argument("--pipeline", required=True, help="pipeline TOML (path or name in pipelines/)")
    sw.add_argument(
        "--tps", help=f"comma-separated tokens/s (default {','.join(f'{t:g}' for t in DEFAULT_TPS)})"
    )
    sw.add_argument(
        "--ttft-ms",
        help=f"comma-separated TTFTs in ms (default {','.join(f'{t:g}' for t in DEFAULT_TTFT_MS)})",
    )
    sw.add_argument("--profiles", help="comma-separated accelerator profiles, or 'all' (instead of the grid)")
    sw.add_argument("--repeat", type=int, default=1, help="replays of each scenario per point (default 1)")
    sw.add_argument(
        "--clock",
        choices=("real", "virtual"),
        default=None,
        help="default: virtual for an all-emulated pipeline, else real",
    )
    sw.add_argument(
        "--out", type=Path, default=None, help="sweep folder (default: runs/<time>-sweep-<pipeline>)"
    )
    sw.set_defaults(func=_cmd_sweep)

    rp = commands.add_parser(
        "report",
        help="a self-contained HTML (or Markdown / JSON) report of a run or sweep folder",
        description="Build a report of a run folder (summary, per-turn table and waterfalls, "
        "link to the recording) or of a sweep folder (table, model, knee, plots); partial sweeps too.",
    )
    rp.add_argument("folder", type=Path, metavar="RUN_OR_SWEEP_DIR")
    rp.add_argument("--format", choices=("html", "md", "json"), default="html", help="default html")
    rp.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        help="file to write (default: FOLDER/report.html for html, stdout for md and json)",
    )
    rp.set_defaults(func=_cmd_report)


def _floats(text: str | None, default: Sequence[float], what: str) -> list[float]:
    if text is None:
        return list(default)
    try:
        values = [float(item) for item in _split_list(text) or ()]
    except ValueError:
        raise ConfigError(f"{what}: expected comma-separated numbers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise ConfigError(f"{what}: give one or more positive numbers, got {text!r}")
    return values


def _cmd_sweep(args: argparse.Namespace) -> int:
    from agent import clock as clocks
    from agent.config.accelerators import PROFILES
    from agent.config.scenario import load_scenario
    from agent.jobs.latency_model import knee_sentence
    from agent.jobs.sweep import (
        DEFAULT_TPS,
        DEFAULT_TTFT_MS,
        Progress,
        grid_points,
        knees,
        profile_points,
        read_sweep,
        run_sweep,
    )
    from agent.metrics.results import new_run_dir
    from agent.report.build import write_sweep_plots
    from agent.stages.pipeline import load_pipeline

    if args.repeat < 1:
        raise ConfigError(f"--repeat must be >= 1, got {args.repeat}")
    scenarios = [load_scenario(path) for path in args.scenario]
    pipeline = load_pipeline(resolve_pipeline(args.pipeline))
    if args.profiles is not None:
        if args.tps is not None or args.ttft_ms is not None:
            raise ConfigError("--profiles replaces the grid: drop --tps / --ttft-ms")
        names = sorted(PROFILES) if args.profiles == "all" else list(_split_list(args.profiles) or ())
        if not names:
            raise ConfigError("--profiles: name at least one profile, or 'all'")
        points = profile_points(names)
    else:
        points = grid_points(
            _floats(args.tps, DEFAULT_TPS, "--tps"), _floats(args.ttft_ms, DEFAULT_TTFT_MS, "--ttft-ms")
        )
    clock = args.clock or ("virtual" if pipeline.virtual_time_ok else "real")
    out = args.out or new_run_dir(Path("runs"), f"sweep-{pipeline.name}")
    print(
        f"sweep: {len(points)} points x {len(scenarios)} scenario(s) x {args.repeat} repeat(s), "
        f"pipeline {pipeline.name}, {clock} time -> {out}",
        flush=True,
    )

    def on_progress(p: Progress) -> None:
        eta = "?" if p.eta_s is None else f"{p.eta_s:.0f}s"
        line = (
            f"\r[{p.points_done}/{p.points_total} points, {p.runs_done}/{p.runs_total} runs] "
            f"{p.point:<40.40} elapsed {p.elapsed_s:.0f}s  ETA {eta} "
        )
        sys.stderr.write(line)
        sys.stderr.flush()

    def on_point(row: dict[str, Any]) -> None:
        sys.stderr.write("\r" + " " * 100 + "\r")
        error = row["pred_error_ms"]
        print(
            f"{row['point']:<40} n={row['n']:<4} v2v p50 {row['v2v_p50'] or 0:8.1f} ms  "
            f"p95 {row['v2v_p95'] or 0:8.1f}  model {row['pred_v2v_p50'] or 0:8.1f}  "
            f"error {'-' if error is None else f'{error:+.1f}'} ms",
            flush=True,
        )

    async def main(clock_: clocks.Clock) -> Any:
        return await run_sweep(
            pipeline,
            scenarios,
            points,
            clock_,
            out,
            repeat=args.repeat,
            on_progress=on_progress,
            on_point=on_point,
        )

    try:
        clocks.run(main, virtual=clock == "virtual")
    finally:
        sys.stderr.write("\n")
        # Plots even for a partial sweep: every finished point is worth a look.
        if (out / "sweep.json").exists():
            doc = read_sweep(out)
            if doc["points"]:
                write_sweep_plots(out)
            for knee in knees(doc):
                print(knee_sentence(knee))
            print(f"sweep ({doc['status']}): {out}  (vlt report {out})")
    return EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    from agent.report.build import build_report

    text = build_report(args.folder, args.format, args.output)
    output = args.output
    if output is None and args.format == "html":
        output = args.folder / "report.html"
    if output is None:
        print(text, end="" if text.endswith("\n") else "\n")
        return EXIT_OK
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    print(f"report: {output}")
    return EXIT_OK


# -- audio devices and the virtual microphone (agent/client/sound_devices.py, agent/client/virtual_audio.py)


def _add_audio_device_commands(commands: Any) -> None:
    dp = commands.add_parser(
        "devices",
        help="list the audio devices PortAudio sees",
        description="List audio input and output devices (index, channels, default rate, "
        "PortAudio's low latencies, host API, name) with the defaults marked.",
    )
    dp.set_defaults(func=_cmd_devices)

    vp = commands.add_parser(
        "virtual-mic",
        help="a virtual microphone and speaker on PulseAudio (no hardware needed)",
        description="Manage a virtual microphone (PulseAudio source vlt_mic, fed by sink vlt_mic_sink) "
        "and speaker (sink vlt_speaker), made the default devices; for tests, CI and machines "
        "without audio hardware (agent/client/virtual_audio.py).",
    )
    actions = vp.add_subparsers(dest="action", metavar="ACTION", required=True)
    start = actions.add_parser(
        "start",
        help="start it (idempotent; starts PulseAudio if none runs)",
        description="Start "
        "PulseAudio if none answers, load the virtual mic and speaker, make them the defaults, and "
        "keep silence playing into the mic so capture streams start at once. Idempotent.",
    )
    start.add_argument("--rate", type=int, default=16000, help="mic sample rate (default 16000)")
    start.set_defaults(func=_cmd_virtual_mic_start)
    stop = actions.add_parser(
        "stop",
        help="undo start",
        description="End the silence feeder, unload the virtual devices, "
        "restore the previous defaults, and stop PulseAudio if start started it.",
    )
    stop.set_defaults(func=_cmd_virtual_mic_stop)
    status = actions.add_parser(
        "status",
        help="say whether it is ready (exit 0) or not (exit 1)",
        description="One line: ready, or what is missing. Exit 0 when ready, 1 when not.",
    )
    status.set_defaults(func=_cmd_virtual_mic_status)
    play = actions.add_parser(
        "play",
        help="play a WAV file into the virtual mic",
        description="Play a WAV file into the "
        "virtual mic (paplay into vlt_mic_sink) and return when it has played.",
    )
    play.add_argument("wav", type=Path, metavar="WAV", help="audio file (WAV, any rate)")
    play.set_defaults(func=_cmd_virtual_mic_play)


def _cmd_devices(args: argparse.Namespace) -> int:
    from agent.client.sound_devices import format_devices, list_devices

    print(format_devices(list_devices()))
    return EXIT_OK


def _cmd_virtual_mic_start(args: argparse.Namespace) -> int:
    from agent.client import virtual_audio

    print(virtual_audio.start(args.rate).describe())
    return EXIT_OK


def _cmd_virtual_mic_stop(args: argparse.Namespace) -> int:
    from agent.client import virtual_audio

    after = virtual_audio.stop()
    if after.daemon_running:
        print(f"virtual mic stopped ({after.server} keeps running: vlt did not start it)")
    else:
        print("virtual mic stopped (and the PulseAudio daemon vlt had started)")
    return EXIT_OK


def _cmd_virtual_mic_status(args: argparse.Namespace) -> int:
    from agent.client import virtual_audio

    now = virtual_audio.status()
    print(now.describe())
    return EXIT_OK if now.ready else EXIT_FAILED


def _cmd_virtual_mic_play(args: argparse.Namespace) -> int:
    from agent.client import virtual_audio

    virtual_audio.play_into_mic_and_wait(args.wav)
    print(f"played {args.wav} into {virtual_audio.MIC_SOURCE}")
    return EXIT_OK


# -- the live microphone demo (agent/jobs/demo.py, agent/client/live.py)


def _add_demo_command(commands: Any) -> None:
    dm = commands.add_parser(
        "demo",
        help="talk to the agent through the microphone, with a live latency HUD",
        description="Capture the microphone, stream it to the agent, play its answer, and show "
        "every turn's hops and voice-to-voice at the listener as it happens (docs/demo.md). "
        "Writes a run folder like a replay.",
    )
    target = dm.add_mutually_exclusive_group()
    target.add_argument(
        "--pipeline",
        default=None,
        help=f"pipeline TOML (path or name in pipelines/) served in-process; default: {DEFAULT_PIPELINE}",
    )
    target.add_argument("--url", help="ws:// URL of a running agent instead of an in-process one")
    dm.add_argument("--input-device", help="microphone: index or part of its name (vlt devices)")
    dm.add_argument("--output-device", help="speaker: index or part of its name (vlt devices)")
    dm.add_argument(
        "--barge-in",
        action="store_true",
        help="keep the mic open while the agent speaks, so talking over it interrupts it "
        "(use headphones; the default is half-duplex)",
    )
    dm.add_argument("--no-hud", action="store_true", help="one line per turn instead of the live HUD")
    dm.add_argument("--turns", type=_positive_int, help="end after this many finished turns")
    dm.add_argument("--duration", type=float, metavar="SECONDS", help="end after this long")
    dm.add_argument(
        "--prebuffer-ms", type=float, default=40.0, help="jitter buffer before a reply plays (default 40)"
    )
    dm.add_argument(
        "--echo-tail-ms",
        type=float,
        default=200.0,
        help="half-duplex: keep the mic muted this long after the agent's audio (default 200)",
    )
    dm.add_argument(
        "--client-vad",
        choices=("silero", "energy"),
        default="silero",
        help="how the demo finds where you stopped speaking (default silero)",
    )
    dm.add_argument("--runs-dir", type=Path, default=Path("runs"), help="where run folders go")
    dm.add_argument("--out", type=Path, default=None, help="exact run folder to write")
    dm.set_defaults(func=_cmd_demo)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def _cmd_demo(args: argparse.Namespace) -> int:
    from agent.client.live import LiveOptions
    from agent.jobs.demo import DemoSettings, run_demo
    from agent.report.console import format_summary
    from agent.stages.pipeline import load_pipeline

    for name in ("prebuffer_ms", "echo_tail_ms", "duration"):
        value = getattr(args, name)
        if value is not None and value < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 0")
    pipeline = None if args.url else load_pipeline(resolve_pipeline(args.pipeline or DEFAULT_PIPELINE))
    options = LiveOptions(
        barge_in=args.barge_in,
        turns=args.turns,
        duration_s=args.duration,
        prebuffer_ms=args.prebuffer_ms,
        echo_tail_ms=args.echo_tail_ms,
        vad=args.client_vad,
    )
    settings = DemoSettings(
        pipeline=pipeline,
        url=args.url,
        input_device=args.input_device,
        output_device=args.output_device,
        options=options,
        hud=not args.no_hud,
        run_dir=args.out,
        runs_root=args.runs_dir,
    )
    result = run_demo(settings)
    print(format_summary(result.summary))
    print(f"results: {result.run_dir}")
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
