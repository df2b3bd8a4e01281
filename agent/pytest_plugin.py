"""pytest plugin: replay scenarios in tests and hold them to latency budgets.

Registered through the ``pytest11`` entry point, so installing the package is
enough. It provides:

``vlt_replay`` (fixture)
    A callable, ``vlt_replay(scenario, pipeline=None, *, url=None,
    clock=None, overrides=None)``, that replays a scenario against a pipeline
    served in-process (default: the ``emulated`` pipeline, in virtual time) or
    against a running agent at ``url`` (real time) and returns a
    :class:`LatencyRun` (records, summary, run folder). Use it as is in sync
    tests; in async tests (pytest-asyncio) ``await vlt_replay.run_async(...)``
    — a virtual-time replay then runs on its own loop in a worker thread, a
    real-time one on the test's loop.

``@pytest.mark.latency_budget(v2v_p95_ms=800, llm_ttft_p50_ms=300)``
    After the test body passes, checks every run the test made with
    ``vlt_replay`` (pooled) against the budgets and fails the test with one
    line per exceeded budget, e.g. ``voice_to_voice p95 = 912.3 ms > budget
    800 ms (n=10)``. Keys are ``<metric>_<stat>_ms``; ``v2v`` is short for
    ``voice_to_voice``. An unknown key is a usage error naming the valid metrics.

The module imports only pytest at load time: it is loaded into every pytest
session of an environment the package is installed in.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable, Coroutine, Generator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from agent.clock import Clock
    from agent.config.scenario import Scenario
    from agent.metrics.records import Summary, TurnRecord
    from agent.stages.pipeline import Pipeline

__all__ = [
    "LatencyRun",
    "Replayer",
    "check_budgets",
    "parse_budget_key",
    "pytest_configure",
    "vlt_replay",
]

MARKER = "latency_budget"
_KEY = re.compile(r"(?P<metric>[a-z0-9_]+?)_(?P<stat>p\d{1,2}(?:_\d+)?|p100|mean)_ms")
_RUNS = pytest.StashKey[list["LatencyRun"]]()


@dataclass(frozen=True, slots=True)
class LatencyRun:
    """One replay's results."""

    run_dir: Path
    records: list[TurnRecord]
    summary: Summary
    completed: bool
    clock: str

    def values(self, metric: str) -> list[float]:
        """The metric's values (ms) over the turns that measured it."""
        from agent.metrics.regress import resolve_metric
        from agent.metrics.results import metric_values

        return metric_values(self.records, resolve_metric(metric))


def parse_budget_key(key: str) -> tuple[str, str]:
    """``"v2v_p95_ms"`` → ``("voice_to_voice", "p95")``; ``ValueError`` naming the valid metrics."""
    from agent.metrics.regress import METRIC_ALIASES, parse_stat, resolve_metric
    from agent.metrics.results import METRICS

    match = _KEY.fullmatch(key)
    valid = ", ".join((*METRICS, *METRIC_ALIASES))
    if match is None:
        raise ValueError(
            f"latency_budget key {key!r} must look like <metric>_<stat>_ms "
            f"(e.g. v2v_p95_ms, llm_ttft_p50_ms); metrics: {valid}"
        )
    stat = match["stat"].replace("_", ".")
    try:
        return resolve_metric(match["metric"]), parse_stat(stat)
    except ValueError:
        metric = match["metric"]
        raise ValueError(f"latency_budget key {key!r}: unknown metric {metric!r}; valid: {valid}") from None


def _parse_marker(mark: pytest.Mark) -> dict[tuple[str, str], float]:
    if mark.args:
        raise ValueError("latency_budget takes keyword arguments only, e.g. latency_budget(v2v_p95_ms=800)")
    if not mark.kwargs:
        raise ValueError("latency_budget needs at least one budget, e.g. latency_budget(v2v_p95_ms=800)")
    budgets = {}
    for key, value in mark.kwargs.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ValueError(f"latency_budget {key}={value!r}: expected a number of ms >= 0")
        budgets[parse_budget_key(key)] = float(value)
    return budgets


def check_budgets(runs: list[LatencyRun], budgets: Mapping[tuple[str, str], float]) -> list[str]:
    """One message per exceeded budget, over the pooled samples of ``runs``."""
    from agent.metrics.results import metric_values
    from agent.metrics.two_sample import stat_value

    records = [r for run in runs for r in run.records]
    problems = []
    for (metric, stat), limit in budgets.items():
        values = metric_values(records, metric)
        if not values:
            problems.append(f"{metric} {stat}: no samples to check against budget {limit:g} ms")
            continue
        value = stat_value(values, stat)
        if value > limit:
            problems.append(f"{metric} {stat} = {value:.1f} ms > budget {limit:g} ms (n={len(values)})")
    return problems


class Replayer:
    """The ``vlt_replay`` fixture's value: replays scenarios and remembers the runs."""

    def __init__(self, runs_root: Path, runs: list[LatencyRun]) -> None:
        self._root = runs_root
        self.runs = runs
        """Every run this test made, in order (the latency_budget marker checks them all)."""
        self._lock = threading.Lock()
        self._made = 0

    def _prepare(
        self,
        scenario: str | Path | Scenario,
        pipeline: str | Path | Pipeline | None,
        url: str | None,
        clock: str | None,
        overrides: Mapping[str, Any] | None,
    ) -> tuple[Callable[[Clock], Coroutine[Any, Any, Any]], bool]:
        """The replay to run (a coroutine function of the clock) and whether its time is virtual."""
        from agent.config.scenario import Scenario, load_scenario
        from agent.errors import ConfigError
        from agent.jobs.runner import run_scenario
        from agent.stages.pipeline import Pipeline, load_pipeline
        from agent.stages.pipeline_names import DEFAULT_PIPELINE, VIRTUAL_DEFAULT_PIPELINE, resolve_pipeline

        if pipeline is not None and url is not None:
            raise ConfigError("give vlt_replay either a pipeline or a url, not both")
        clock = clock or ("real" if url else "virtual")
        if clock not in ("real", "virtual"):
            raise ConfigError(f"clock must be 'real' or 'virtual', got {clock!r}")
        scen = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
        pipe: Pipeline | None = None
        if url is None:
            if isinstance(pipeline, Pipeline):
                pipe = pipeline
            else:
                # As `vlt replay` does: the real default can't run in virtual time.
                default = VIRTUAL_DEFAULT_PIPELINE if clock == "virtual" else DEFAULT_PIPELINE
                pipe = load_pipeline(resolve_pipeline(str(pipeline or default)))
            if overrides:
                pipe = pipe.with_overrides(dict(overrides))
        elif overrides:
            raise ConfigError("overrides apply to an in-process pipeline, not to a url")
        with self._lock:
            self._made += 1
            run_dir = self._root / f"run-{self._made:03d}-{re.sub(r'[^A-Za-z0-9._-]+', '-', scen.name)}"

        async def replay(clock_: Clock) -> Any:
            return await run_scenario(scen, clock_, pipeline=pipe, url=url, run_dir=run_dir)

        return replay, clock == "virtual"

    def _record(self, result: Any, virtual: bool) -> LatencyRun:
        run = LatencyRun(
            run_dir=result.run_dir,
            records=result.records,
            summary=result.summary,
            completed=result.completed,
            clock="virtual" if virtual else "real",
        )
        with self._lock:
            self.runs.append(run)
        return run

    def __call__(
        self,
        scenario: str | Path | Scenario,
        pipeline: str | Path | Pipeline | None = None,
        *,
        url: str | None = None,
        clock: str | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> LatencyRun:
        """Replay and wait for the result (virtual time by default; real time with ``url``)."""
        from agent import clock as clocks

        main, virtual = self._prepare(scenario, pipeline, url, clock, overrides)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return self._record(clocks.run(main, virtual=virtual), virtual)
        # Called from a coroutine: asyncio cannot nest loops in one thread, so the
        # replay gets its own loop in a worker (this blocks the caller's loop).
        box: list[Any] = []

        def work() -> None:
            try:
                box.append(clocks.run(main, virtual=virtual))
            except BaseException as exc:
                box.append(exc)

        worker = threading.Thread(target=work, name="vlt-replay")
        worker.start()
        worker.join()
        if isinstance(box[0], BaseException):
            raise box[0]
        return self._record(box[0], virtual)

    async def run_async(
        self,
        scenario: str | Path | Scenario,
        pipeline: str | Path | Pipeline | None = None,
        *,
        url: str | None = None,
        clock: str | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> LatencyRun:
        """The same, for async tests: never blocks the test's event loop."""
        from agent import clock as clocks

        main, virtual = self._prepare(scenario, pipeline, url, clock, overrides)
        if virtual:
            # Virtual time needs a loop of its own (VirtualTimeLoop): run it in a thread.
            result = await asyncio.to_thread(clocks.run, main, virtual=True)
        else:
            result = await main(clocks.MonotonicClock())
        return self._record(result, virtual)


@pytest.fixture
def vlt_replay(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Replayer:
    """Replay a scenario against a pipeline or URL; see :class:`Replayer`."""
    runs: list[LatencyRun] = []
    request.node.stash[_RUNS] = runs
    return Replayer(tmp_path_factory.mktemp("vlt-runs"), runs)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(**budgets): fail the test if its vlt_replay runs exceed latency budgets, "
        "e.g. latency_budget(v2v_p95_ms=800, llm_ttft_p50_ms=300); keys are <metric>_<stat>_ms",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Check marker keys up front: a typo should stop the session, not pass silently.
    for item in items:
        for mark in item.iter_markers(MARKER):
            try:
                _parse_marker(mark)
            except ValueError as exc:
                raise pytest.UsageError(f"{item.nodeid}: {exc}") from None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    result = yield  # the test body; if it failed, that failure stands
    marks = list(item.iter_markers(MARKER))
    if not marks:
        return result
    budgets: dict[tuple[str, str], float] = {}
    for mark in reversed(marks):  # closest marker (the function's) wins
        budgets.update(_parse_marker(mark))
    runs = item.stash.get(_RUNS, [])
    if not runs:
        pytest.fail(f"@{MARKER}: the test made no vlt_replay run to check", pytrace=False)
    problems = check_budgets(runs, budgets)
    if problems:
        pytest.fail("latency budget exceeded:\n  " + "\n  ".join(problems), pytrace=False)
    return result
