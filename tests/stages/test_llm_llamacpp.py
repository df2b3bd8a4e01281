"""The in-process llama.cpp LLM (stage kind ``llamacpp``) with the real SmolLM2-135M model.

Needs the ``llamacpp`` extra (``pip install -e '.[llamacpp]'``; CI installs it).
Generations are kept short (a few dozen tokens at ~90 tok/s on 2 cores) so the
module runs in well under a minute.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import itertools
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("llama_cpp", reason="the llamacpp extra is not installed: pip install -e '.[llamacpp]'")

from agent import clock as clocks
from agent.config.scenario import load_scenario
from agent.errors import BackendError, ConfigError
from agent.jobs.runner import run_scenario
from agent.stages import llm_llamacpp
from agent.stages.interfaces import LLMDelta, LLMRequest, SessionContext
from agent.stages.llm_llamacpp import LlamaCppLLM, LlamaCppLLMConfig, load_model
from agent.stages.pipeline import load_pipeline, parse_pipeline
from tests.conftest import PIPELINES

# Greedy, so a reply is the same every run; short, so the module stays fast. One
# thread: two would spin-wait against whatever else runs on these 2 cores.
CONFIG = LlamaCppLLMConfig(max_tokens=24, temperature=0.0, n_threads=1)
MESSAGES = [
    {"role": "system", "content": "You are a helpful voice assistant. Answer in one short sentence."},
    {"role": "user", "content": "What is the capital of France?"},
]
LONG = [*MESSAGES[:1], {"role": "user", "content": "Tell me a long story about a dragon and a knight."}]


def _ctx() -> SessionContext:
    return SessionContext(clock=clocks.MonotonicClock(), sample_rate=16000, frame_samples=320)


def _request(messages: list[dict[str, str]] = MESSAGES, turn: int = 0) -> LLMRequest:
    return LLMRequest(messages=messages, turn=turn)


async def _collect(llm: LlamaCppLLM, request: LLMRequest) -> list[LLMDelta]:
    return [delta async for delta in llm.stream(request)]


def test_default_model_is_the_packaged_smollm2_and_loads_offline() -> None:
    path = llm_llamacpp.default_model_path()
    assert path.name.lower().startswith("smollm2") and path.suffix == ".gguf"
    model = load_model(CONFIG)
    assert model.path == path
    assert model.llama.n_ctx() == CONFIG.n_ctx  # 2048: already a multiple of 256


def test_missing_model_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model file not found") as info:
        LlamaCppLLM(LlamaCppLLMConfig(model_path=str(tmp_path / "nope.gguf")), _ctx())
    assert info.value.field == "llm.model_path"


def test_missing_model_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = llm_llamacpp.importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name == llm_llamacpp.DEFAULT_MODEL_PACKAGE else real_find_spec(name, *args)

    monkeypatch.setattr(llm_llamacpp.importlib.util, "find_spec", find_spec)
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[llamacpp\]'"):
        LlamaCppLLM(LlamaCppLLMConfig(), _ctx())


async def test_an_unloadable_model_fails_the_turn_with_a_backend_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file")
    llm = LlamaCppLLM(LlamaCppLLMConfig(model_path=str(bad)), _ctx())
    with pytest.raises(BackendError, match=r"llamacpp: cannot load .*bad\.gguf"):
        await _collect(llm, _request())


async def test_a_prompt_longer_than_the_context_says_what_to_change() -> None:
    # 64 is padded to 256, as llama.cpp pads it; the prompt is ~400 tokens.
    llm = LlamaCppLLM(dataclasses.replace(CONFIG, n_ctx=64), _ctx())
    history = [{"role": "user", "content": "Tell me about the weather today. " * 60}, *MESSAGES[1:]]
    with pytest.raises(BackendError, match=r"exceed context window.*raise llm\.n_ctx"):
        await _collect(llm, _request(history))
    # The model is free again for the next turn.
    model = await llm.model()
    assert await asyncio.to_thread(model.lock.acquire, timeout=1.0)
    model.lock.release()


async def test_two_stage_instances_share_one_model() -> None:
    a, b = LlamaCppLLM(CONFIG, _ctx()), LlamaCppLLM(CONFIG, _ctx())
    assert (await a.model()).llama is (await b.model()).llama
    # Sampling settings are per request, not per model: they share it too.
    c = LlamaCppLLM(dataclasses.replace(CONFIG, max_tokens=8, temperature=0.5), _ctx())
    assert (await c.model()).llama is (await a.model()).llama


async def test_stream_yields_text_then_usage_and_llama_timing() -> None:
    llm = LlamaCppLLM(CONFIG, _ctx())
    deltas = await _collect(llm, _request())
    texts = [d.text for d in deltas if d.text]
    assert "".join(texts).strip()
    final = deltas[-1]
    assert final.text == "" and final.usage is not None and final.server_timing is not None
    assert final.usage["completion_tokens"] == len(texts)
    assert final.usage["prompt_tokens"] > 10
    timing = final.server_timing
    assert timing["source"] == "llama.cpp"
    assert timing["finish_reason"] in ("stop", "length")
    assert timing["prompt_ms"] >= 0 and timing["predicted_ms"] > 0
    assert timing["queued"] is False


async def test_counted_usage_matches_llamas_own_non_streamed_usage() -> None:
    llm = LlamaCppLLM(CONFIG, _ctx())
    deltas = await _collect(llm, _request())
    model = await llm.model()
    kwargs = {**llm.request_kwargs(_request()), "stream": False}
    with model.lock:
        reference = model.llama.create_chat_completion(**kwargs)
    assert deltas[-1].usage == {
        "prompt_tokens": reference["usage"]["prompt_tokens"],
        "completion_tokens": reference["usage"]["completion_tokens"],
    }
    assert "".join(d.text for d in deltas) == reference["choices"][0]["message"]["content"]


async def test_event_loop_stays_responsive_while_generating() -> None:
    llm = LlamaCppLLM(dataclasses.replace(CONFIG, max_tokens=64), _ctx())
    await llm.model()
    loop = asyncio.get_running_loop()
    ticks: list[float] = []
    generating = True

    async def ticker() -> None:
        while generating:
            ticks.append(loop.time())
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    deltas = await _collect(llm, _request(LONG))
    generating = False
    await task
    assert sum(bool(d.text) for d in deltas) > 20
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    # Generating on the loop would show one gap as long as the whole generation
    # (~1 s), or the prompt eval (~0.1-0.3 s). Ticks are 10-25 ms apart on a quiet
    # machine; the bound is loose because other processes share these 2 cores.
    assert max(gaps) < 0.2, f"event loop stalled for {max(gaps) * 1000:.0f} ms"
    assert len(ticks) > 10


async def test_cancelling_mid_stream_stops_the_worker_and_frees_the_model() -> None:
    llm = LlamaCppLLM(dataclasses.replace(CONFIG, max_tokens=400), _ctx())
    model = await llm.model()
    got: list[str] = []

    async def consume() -> None:
        async for delta in llm.stream(_request(LONG)):
            got.append(delta.text)
            if len(got) == 3:
                started.set()

    started = asyncio.Event()
    task = asyncio.create_task(consume())
    await asyncio.wait_for(started.wait(), 10)
    task.cancel()  # what a barge-in does to the response task
    with pytest.raises(asyncio.CancelledError):
        await task
    # The worker notices within a token or two (~11 ms each); 400 tokens would take ~4 s.
    assert await asyncio.to_thread(model.lock.acquire, timeout=1.0)
    model.lock.release()
    assert len(got) < 10
    # The next turn runs normally, and was not queued behind the cancelled one.
    deltas = await _collect(llm, _request(turn=1))
    assert "".join(d.text for d in deltas).strip()
    assert deltas[-1].server_timing is not None and deltas[-1].server_timing["queued"] is False


async def test_concurrent_requests_queue_for_the_model() -> None:
    a, b = LlamaCppLLM(CONFIG, _ctx()), LlamaCppLLM(CONFIG, _ctx())
    await a.model()
    first, second = await asyncio.gather(_collect(a, _request()), _collect(b, _request(LONG)))
    queued = sorted(d[-1].server_timing["queued"] for d in (first, second) if d[-1].server_timing is not None)
    assert queued == [False, True]
    assert all("".join(x.text for x in d).strip() for d in (first, second))


PIPELINE = """
name = "llamacpp-test"
[vad]
kind = "oracle"
endpoint_ms = 300
[asr]
kind = "emulated"
finalize_ms = 50
[llm]
kind = "llamacpp"
n_threads = 1    # the same model instance as CONFIG's
max_tokens = 12  # the client waits for the reply's audio: keep it a few seconds long
temperature = 0.0
[tts]
kind = "emulated"
first_audio_ms = 30
rtf = 0.1
"""

SCENARIO = """
name: llamacpp-2-turn
defaults:
  pause_ms: 300
  reply_timeout_ms: 20000
turns:
  - user: "Hi, what time do you open tomorrow?"
  - user: "Do you sell cordless drills?"
"""


def test_real_time_replay_over_the_websocket(tmp_path: Path) -> None:
    pipeline = parse_pipeline(PIPELINE)
    path = tmp_path / "scenario.yaml"
    path.write_text(SCENARIO, encoding="utf-8")
    scenario = load_scenario(path)

    async def main(clock: clocks.Clock) -> Any:
        return await run_scenario(scenario, clock, pipeline=pipeline, run_dir=tmp_path / "run")

    result = clocks.run(main, virtual=False)
    assert [r["status"] for r in result.records] == ["ok", "ok"]
    for record in result.records:
        assert record["latency_ms"]["llm_ttft"] > 0
        assert record["reply"].strip()
        assert record["llm"]["output_tokens"] > 0
        assert record["llm"]["server_timing"]["source"] == "llama.cpp"


def test_local_cpu_pipeline_is_a_real_local_agent(tmp_path: Path) -> None:
    """pipelines/local-cpu.toml end to end: Silero, faster-whisper, SmolLM2 and Piper."""
    missing = [m for m in ("faster_whisper", "piper", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"the speech extra is not installed ({', '.join(missing)}): pip install -e '.[speech]'")
    # Short replies: the client waits for each reply's audio to be played out.
    pipeline = load_pipeline(PIPELINES / "local-cpu.toml").with_overrides({"llm.max_tokens": 16})
    path = tmp_path / "scenario.yaml"
    path.write_text(SCENARIO, encoding="utf-8")
    scenario = load_scenario(path)

    async def main(clock: clocks.Clock) -> Any:
        return await run_scenario(scenario, clock, pipeline=pipeline, run_dir=tmp_path / "run")

    result = clocks.run(main, virtual=False)
    assert [r["status"] for r in result.records] == ["ok", "ok"]
    for record in result.records:
        assert record["transcript"].strip()
        assert record["reply"].strip()
        assert record["latency_ms"]["llm_ttft"] > 0
        assert record["llm"]["server_timing"]["source"] == "llama.cpp"
