"""Do the replay's numbers stay true when the machine is busy? (issue 12)

Replays the shipped scenarios on the default pipeline (Silero, faster-whisper,
emulated Groq-class LLM, Piper) in real time, until at least ``--min-turns``
turns, first on an otherwise idle machine and then with a CPU hog on every core
(one busy-looping process per core), and prints per turn:

- ``v2v``: the voice-to-voice the turn record reports;
- ``heard``: the silence measured in the run's own recording.wav (5 ms RMS
  windows, -40 dBFS: the caller's last audible sample → the agent's first one,
  agent.metrics.recording_truth) and ``diff`` = v2v - heard;
- for a barge-in turn, the reported barge-in stop vs the recording's;
- the caller's send lateness (max, p99 over the turn's frames; ``!`` = flagged);
- WER of the final transcript.

and per mode a summary against the issue's targets. ``--agent-loop`` compares where the
in-process agent runs: a child process (the default, as in vlt replay), its own thread, or the
caller's event loop.

Run:  .venv/bin/python benchmarks/truth.py [--modes idle,hog] [--agent-loop process|thread|shared]
      [--scenarios a.yaml,b.yaml] [--min-turns 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent import clock as clocks  # noqa: E402
from agent.config.scenario import load_scenario  # noqa: E402
from agent.jobs.runner import run_scenario  # noqa: E402
from agent.metrics.recording_truth import (  # noqa: E402
    heard_barge_in_stop_ms,
    heard_silence_ms,
    read_recording,
)
from agent.stages.pipeline import load_pipeline  # noqa: E402
from agent.stages.pipeline_names import resolve_pipeline  # noqa: E402

SHIPPED = ("quick-3-turn.yaml", "restaurant-booking.yaml", "barge-in.yaml")


def _spin() -> None:
    while True:
        pass


class Hog:
    """One busy-looping process per core while the block runs."""

    def __init__(self, procs: int) -> None:
        self.procs = procs
        self._children: list[multiprocessing.Process] = []

    def __enter__(self) -> Hog:
        for _ in range(self.procs):
            p = multiprocessing.Process(target=_spin, daemon=True)
            p.start()
            self._children.append(p)
        time.sleep(0.5)
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self._children:
            p.terminate()
        for p in self._children:
            p.join()


def _plan(names: list[str], min_turns: int) -> list[Path]:
    paths = [ROOT / "scenarios" / n if "/" not in n else Path(n) for n in names]
    plan: list[Path] = []
    turns = 0
    while turns < min_turns:
        for path in paths:
            plan.append(path)
            turns += len(load_scenario(path).turns)
            if turns >= min_turns:
                break
    return plan


def _one_run(path: Path, pipeline_name: str, agent_loop: str, out: Path) -> list[dict[str, Any]]:
    scenario = load_scenario(path)
    pipeline = load_pipeline(resolve_pipeline(pipeline_name))

    async def main(clock: clocks.Clock) -> Any:
        return await run_scenario(scenario, clock, pipeline=pipeline, run_dir=out, agent_loop=agent_loop)  # type: ignore[arg-type]

    result = clocks.run(main)
    stereo, rate = read_recording(out / "recording.wav")
    rows = []
    for r in result.records:
        marks, lat = r["marks_ns"], r["latency_ms"]
        v2v = lat["voice_to_voice"]
        heard = None
        if "user.speech_end" in marks:
            heard, _, _ = heard_silence_ms(stereo, rate, marks["user.speech_end"] * rate // 10**9)
        row: dict[str, Any] = {
            "scenario": scenario.name,
            "turn": r["turn"],
            "status": r["status"],
            "v2v": v2v,
            "heard": heard,
            "diff": None if v2v is None or heard is None else v2v - heard,
            "late_max": r["caller"]["lateness_max_ms"],
            "late_p99": r["caller"]["lateness_p99_ms"],
            "flagged": r["caller"]["flagged"],
            "wer": r["wer"],
            "transcript": r["transcript"],
            "user_text": r["user_text"],
            "stop": lat["barge_in_stop"],
            "stop_heard": None,
            "lateness_all": None,
        }
        if r["barge_in"] is not None and "user.speech_start" in marks:
            row["stop_heard"] = heard_barge_in_stop_ms(
                stereo, rate, marks["user.speech_start"] * rate // 10**9
            )
        rows.append(row)
    if rows:
        rows[0]["run_caller"] = result.summary["caller"]
    return rows


def _f(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _print_rows(mode: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n### {mode}\n")
    print("| scenario | turn | status | v2v | heard | diff | late max | late p99 | WER | stop | heard |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        flag = " !" if r["flagged"] else ""
        print(
            f"| {r['scenario']} | {r['turn']} | {r['status']} | {_f(r['v2v'])} | {_f(r['heard'])} | "
            f"{_f(r['diff'])} | {_f(r['late_max'])}{flag} | {_f(r['late_p99'])} | {_f(r['wer'], 2)} | "
            f"{_f(r['stop'])} | {_f(r['stop_heard'])} |"
        )


def _summary(mode: str, rows: list[dict[str, Any]], runs: list[list[dict[str, Any]]]) -> dict[str, Any]:
    diffs = [abs(r["diff"]) for r in rows if r["diff"] is not None]
    stops = [
        abs(r["stop"] - r["stop_heard"])
        for r in rows
        if r["stop"] is not None and r["stop_heard"] is not None
    ]
    wers = [r["wer"] for r in rows if r["wer"] is not None]
    late = [r["late_max"] for r in rows if r["late_max"] is not None]
    p99s = [run[0]["run_caller"]["lateness_p99_ms"] for run in runs if run and run[0].get("run_caller")]
    late_turns = [r for r in rows if r["late_max"] is not None and r["late_max"] > 5.0]
    unflagged = [r for r in late_turns if not r["flagged"]]
    first = []
    for run in runs:
        v = [r["v2v"] for r in run if r["v2v"] is not None and r["status"] == "ok"]
        if run and run[0]["v2v"] is not None and len(v) > 2:
            first.append(run[0]["v2v"] - statistics.median(v[1:]))
    out = {
        "mode": mode,
        "turns": len(rows),
        "max_abs_diff_ms": max(diffs, default=None),
        "turns_over_10ms": sum(1 for d in diffs if d > 10),
        "max_abs_barge_in_diff_ms": max(stops, default=None),
        "caller_p99_ms_per_run": p99s,
        "caller_max_ms": max(late, default=None),
        "late_turns": len(late_turns),
        "late_turns_unflagged": len(unflagged),
        "mean_wer": statistics.fmean(wers) if wers else None,
        "turn0_minus_median_ms": first,
    }
    print(f"\n{mode}: {json.dumps(out)}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modes", default="idle,hog")
    ap.add_argument("--agent-loop", choices=("thread", "process", "shared"), default="process")
    ap.add_argument("--pipeline", default="default")
    ap.add_argument("--scenarios", default=",".join(SHIPPED))
    ap.add_argument("--min-turns", type=int, default=20)
    ap.add_argument("--hog-procs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    plan = _plan(args.scenarios.split(","), args.min_turns)
    print(
        f"truth: {len(plan)} replays ({', '.join(p.stem for p in plan)}), pipeline {args.pipeline}, "
        f"agent loop {args.agent_loop}, {os.cpu_count()} CPUs"
    )
    report: dict[str, Any] = {"agent_loop": args.agent_loop, "pipeline": args.pipeline, "modes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes.split(","):
            runs = []
            hog = Hog(args.hog_procs) if mode == "hog" else None
            if hog is not None:
                hog.__enter__()
            try:
                for i, path in enumerate(plan):
                    runs.append(_one_run(path, args.pipeline, args.agent_loop, Path(tmp) / f"{mode}-{i}"))
            finally:
                if hog is not None:
                    hog.__exit__(None, None, None)
            rows = [r for run in runs for r in run]
            _print_rows(mode, rows)
            report["modes"][mode] = {"summary": _summary(mode, rows, runs), "rows": rows}
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
