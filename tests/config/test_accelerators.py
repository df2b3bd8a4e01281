"""Accelerator profiles and the timing model; the in-process emulated LLM with a profile."""

from __future__ import annotations

import dataclasses
import itertools
import random
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from agent import clock as clock_mod
from agent.cli import main as vlt_main
from agent.clock import Clock
from agent.config import accelerators as acc
from agent.config.accelerator_timing import (
    TokenTimer,
    aggregate_tokens_per_s,
    stream_tokens_per_s,
    token_schedule_ns,
    ttft_ns,
    ttft_parts,
)
from agent.config.accelerators import PROFILES, AcceleratorProfile, load_profiles, with_overrides
from agent.errors import ConfigError
from agent.stages.interfaces import LLMRequest, SessionContext
from agent.stages.llm import EmulatedLLM, EmulatedLLMConfig, estimate_tokens, resolve_profile, tokenize
from agent.stages.pipeline import parse_pipeline
from tests.conftest import ROOT

MS = 1_000_000
REQUIRED = (
    "groq-llama-3.1-8b",
    "groq-llama-3.3-70b",
    "groq-llama-3.1-70b-specdec",
    "cerebras-llama-3.1-8b",
    "cerebras-llama-3.1-70b",
    "cerebras-llama-3.1-405b",
    "sambanova-llama-3.1-8b",
    "sambanova-llama-3.1-70b",
    "sambanova-llama-3.1-405b",
    "fireworks-llama-3.1-8b",
    "fireworks-llama-3.1-70b",
    "h100-trtllm-llama-3.1-8b",
    "2xh100-fp8-llama-3.3-70b",
    "cpu-llamacpp-llama-3.2-3b",
    "cpu-here-smollm2-135m",
)
LOADS = (1, 2, 3, 4, 8, 16, 31, 32, 64, 100, 128, 250, 256, 300, 1000)


def plain(**changes: float) -> AcceleratorProfile:
    """A test profile: 100 ms base, prefill 10k tok/s, 200 tok/s, no jitter, no contention."""
    base = AcceleratorProfile(
        name="test", label="test", model="m", ttft_ms=100, tokens_per_s=200, source="s", date="d"
    )
    return dataclasses.replace(base, prefill_tokens_per_s=10_000, **changes)


# --------------------------------------------------------------------------- the shipped profiles


def test_required_profiles_present() -> None:
    assert set(REQUIRED) <= set(PROFILES)
    assert acc.DEFAULT_PROFILE in PROFILES


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_profile_is_sourced_dated_and_positive(name: str) -> None:
    p = PROFILES[name]
    assert p.name == name
    assert p.source.strip() and p.date.strip() and p.label and p.model
    assert p.notes.strip()  # says which numbers are estimates or assumptions
    assert p.ttft_ms > 0 and p.tokens_per_s > 0 and p.max_batch >= 1
    assert p.prefill_tokens_per_s is not None and p.prefill_tokens_per_s > 0
    assert p.jitter >= 0 and p.ttft_jitter_ms >= 0 and p.batch_slowdown >= 0 and p.queue_ms_per_stream >= 0
    if p.aggregate_tokens_per_s is not None:
        assert p.aggregate_tokens_per_s >= p.tokens_per_s  # one stream is never capped


def test_estimated_ttfts_say_so() -> None:
    # REFERENCES.md marks these TTFTs "(est.)"; the uncertainty is carried into the notes.
    for name in REQUIRED:
        if name.startswith(("groq-", "cerebras-llama-3.1-8b", "cerebras-llama-3.1-70b", "sambanova-")):
            assert "est." in PROFILES[name].notes, name


def test_reference_figures() -> None:
    assert PROFILES["groq-llama-3.1-70b-specdec"].tokens_per_s == 1665
    assert PROFILES["cerebras-llama-3.1-405b"].ttft_ms == 240
    assert [PROFILES[f"sambanova-llama-3.1-{s}"].tokens_per_s for s in ("8b", "70b", "405b")] == [
        1042,
        457,
        129,
    ]
    # 2xH100 70B: fitted to NIM's 48 ms at 500 prompt tokens and 407 ms at 5,000.
    p = PROFILES["2xh100-fp8-llama-3.3-70b"]
    assert ttft_ns(p, 500, 1) / MS == pytest.approx(48, abs=1)
    assert ttft_ns(p, 5000, 1) / MS == pytest.approx(407, abs=10)


def test_nim_8b_ttft_grows_with_load_as_published() -> None:
    # REFERENCES "How these move": NIM 8B, 10 ms at concurrency 1, ~600 ms at 250.
    p = PROFILES["h100-trtllm-llama-3.1-8b"]
    assert ttft_ns(p, 100, 1) / MS == pytest.approx(10, abs=3)
    assert ttft_ns(p, 100, 250) / MS == pytest.approx(600, rel=0.05)


# --------------------------------------------------------------------------- the profiles are data

BUILTIN_TEXT = acc.builtin_profiles_file().read_text(encoding="utf-8")


def test_builtins_come_from_the_package_data_file() -> None:
    path = acc.builtin_profiles_file()
    assert Path(str(path)).parts[-3:] == ("agent", "data", "accelerators.toml")
    loaded = acc.load_builtin_profiles()
    assert set(REQUIRED) <= set(loaded)
    for name, profile in loaded.items():
        assert PROFILES[name] == profile  # PROFILES holds exactly what the file says


def test_every_builtin_table_spells_out_every_setting() -> None:
    # Nothing falls back to a default silently: each number sits next to its source and date.
    every = {f.name for f in dataclasses.fields(AcceleratorProfile)} - {"name"}
    for name, table in tomllib.loads(BUILTIN_TEXT).items():
        left_out = every - set(table)
        # TOML has no null: "no aggregate cap" is the key left out (one slot, so no cap is needed).
        assert left_out <= {"aggregate_tokens_per_s"}, (name, left_out)
        if left_out:
            assert table["max_batch"] == 1, name
        assert "base" not in table, name


def test_pyproject_ships_the_data_file() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "data/*.toml" in pyproject["tool"]["setuptools"]["package-data"]["agent"]


@pytest.mark.parametrize(
    ("old", "new", "field", "fragment"),
    [
        # a provenance field left out: reported at the table's header
        ('date = "2024-11"\n', "", "cerebras-llama-3.1-405b", "must set date itself"),
        # a bad number: the shared loader's message, at the key's line
        ("ttft_ms = 240\n", "ttft_ms = -240\n", "cerebras-llama-3.1-405b.ttft_ms", "must be >= 0"),
    ],
    ids=["no-date", "negative"],
)
def test_a_broken_builtin_file_names_file_line_and_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, old: str, new: str, field: str, fragment: str
) -> None:
    assert BUILTIN_TEXT.count(old) == 1
    text = BUILTIN_TEXT.replace(old, new)
    path = tmp_path / "accelerators.toml"
    path.write_text(text, encoding="utf-8")
    monkeypatch.setattr(acc, "builtin_profiles_file", lambda: path)
    with pytest.raises(ConfigError) as info:
        acc.load_builtin_profiles()
    lines = text.splitlines()
    line = lines.index('["cerebras-llama-3.1-405b"]') + 1
    if new:
        line = lines.index(new.strip()) + 1
    error = info.value
    assert (error.path, error.line, error.field) == (str(path), line, field)
    assert str(error).startswith(f"{path}:{line}: {field}: ") and fragment in str(error)


def test_loaded_on_first_use_whichever_module_is_imported_first() -> None:
    # Checking the file needs agent.stages.pipeline, which imports the stages, which import
    # agent.config.accelerators: loading at import would fail when agent.stages.pipeline comes first.
    for first in ("agent.stages.pipeline", "agent.config.accelerators", "agent.server.llm_emulator"):
        code = f"import {first}; from agent.config.accelerators import PROFILES; print(len(PROFILES))"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert int(out.stdout) >= len(REQUIRED), first


# --------------------------------------------------------------------------- the model


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_model_is_monotonic(name: str) -> None:
    p = PROFILES[name]
    ttfts = [ttft_ns(p, prompt, 1) for prompt in (0, 10, 100, 1000, 10_000)]
    assert ttfts == sorted(ttfts) and ttfts[-1] > ttfts[0]
    by_load = [ttft_ns(p, 100, n) for n in LOADS]
    assert by_load == sorted(by_load)
    rates = [stream_tokens_per_s(p, n) for n in LOADS]
    assert all(a >= b for a, b in itertools.pairwise(rates))
    assert rates[0] == p.tokens_per_s
    for n in LOADS:
        total = aggregate_tokens_per_s(p, n)
        if p.aggregate_tokens_per_s is not None:
            assert total <= p.aggregate_tokens_per_s * (1 + 1e-12)
    if p.max_batch > 1:
        assert by_load[-1] > by_load[0] and rates[-1] < rates[0]


def test_rate_curve_and_cap() -> None:
    p = plain(batch_slowdown=0.1, aggregate_tokens_per_s=500, max_batch=16)
    assert stream_tokens_per_s(p, 1) == 200
    assert stream_tokens_per_s(p, 2) == pytest.approx(200 / 1.1)  # the batch curve
    assert stream_tokens_per_s(p, 8) == pytest.approx(500 / 8)  # the cap binds: 200/1.7 > 62.5
    assert aggregate_tokens_per_s(p, 8) == pytest.approx(500)
    assert stream_tokens_per_s(p, 40) == stream_tokens_per_s(p, 16)  # beyond max_batch requests wait
    assert stream_tokens_per_s(p, 0) == 200  # an idle accelerator is a batch of one


def test_ttft_parts() -> None:
    p = plain(queue_ms_per_stream=3, max_batch=4)
    parts = ttft_parts(p, 250, 3)
    assert (parts.queue_ns, parts.prefill_ns, parts.base_ns) == (6 * MS, 25 * MS, 100 * MS)
    assert parts.total_ns == ttft_ns(p, 250, 3) == 131 * MS
    assert ttft_parts(p, 250, 9).queue_ns == 9 * MS  # capped at the batch
    assert ttft_ns(dataclasses.replace(p, prefill_tokens_per_s=None), 5000, 1) == 100 * MS


def test_schedule_exact_without_jitter() -> None:
    p = plain(tokens_per_s=275)
    times = token_schedule_ns(p, 50, prompt_tokens=100)
    assert times[0] == 110 * MS
    for i, t in enumerate(times):
        assert abs(t - (110e6 + i * 1e9 / 275)) <= 1
    assert token_schedule_ns(p, 0) == []


def test_jitter_is_seeded_bounded_and_centred() -> None:
    p = plain(jitter=0.3, ttft_jitter_ms=20)
    a = token_schedule_ns(p, 400, rng=random.Random("1:2"))
    assert a == token_schedule_ns(p, 400, rng=random.Random("1:2"))
    assert a != token_schedule_ns(p, 400, rng=random.Random("1:3"))
    gaps = [y - x for x, y in itertools.pairwise(a)]
    assert min(gaps) >= 0
    assert sum(gaps) / len(gaps) == pytest.approx(5 * MS, rel=0.05)
    # Jitter moves only the base latency: TTFT never drops below queue + prefill.
    for seed in range(50):
        assert ttft_ns(plain(ttft_jitter_ms=500), 1000, 1, random.Random(seed)) >= 100 * MS


def test_token_timer_under_changing_load() -> None:
    p = plain(aggregate_tokens_per_s=400, max_batch=8)
    timer = TokenTimer(p, 0)
    offsets = [timer.next_ns(n) for n in (1, 1, 4, 4, 1)]
    # each gap uses the load when it starts: 200 tok/s alone, 100 tok/s with 4 streams
    assert offsets == [0, 5 * MS, 15 * MS, 25 * MS, 30 * MS]


# --------------------------------------------------------------------------- user profiles


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "profiles.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_user_profiles_merge_into_builtins(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """# my lab's hardware
["h200-llama-3.1-8b"]
base = "h100-trtllm-llama-3.1-8b"
label = "H200, TensorRT-LLM"
tokens_per_s = 315
source = "scaled by memory bandwidth 4.8/3.35"
date = "2026-01"

[tiny]
ttft_ms = 5
tokens_per_s = 1000

["groq-llama-3.3-70b"]
base = "groq-llama-3.3-70b"
tokens_per_s = 300
""",
    )
    before = dict(PROFILES)
    merged = load_profiles(path)
    assert before == PROFILES  # load_profiles returns a merged copy
    assert set(merged) == set(PROFILES) | {"h200-llama-3.1-8b", "tiny"}
    h200 = merged["h200-llama-3.1-8b"]
    assert h200.tokens_per_s == 315.0 and isinstance(h200.tokens_per_s, float)
    assert h200.prefill_tokens_per_s == PROFILES["h100-trtllm-llama-3.1-8b"].prefill_tokens_per_s
    assert (h200.source, h200.date, h200.label) == (
        "scaled by memory bandwidth 4.8/3.35",
        "2026-01",
        "H200, TensorRT-LLM",
    )
    tiny = merged["tiny"]
    assert (tiny.ttft_ms, tiny.tokens_per_s, tiny.max_batch, tiny.date) == (5, 1000, 1, "undated")
    assert str(path) in tiny.source
    assert merged["groq-llama-3.3-70b"].tokens_per_s == 300  # the file wins on a name


def test_add_profiles_makes_them_usable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(acc, "PROFILES", dict(PROFILES))
    path = write(tmp_path, '[mine]\nbase = "cpu-here-smollm2-135m"\ntokens_per_s = 45\n')
    assert acc.add_profiles(path) == ["mine"]
    assert acc.get_profile("mine").tokens_per_s == 45
    # a pipeline may now name it (the choices are read live)
    text = '[vad]\nkind = "oracle"\n[asr]\nkind = "emulated"\n[llm]\nkind = "emulated"\nprofile = "mine"\n'
    pipeline = parse_pipeline(text + '[tts]\nkind = "emulated"\n')
    assert pipeline.stages["llm"].config.profile == "mine"


@pytest.mark.parametrize(
    ("text", "line", "field", "fragment"),
    [
        ("[a]\nttft_ms = 1\ntokens_per_s = 2\nspeed = 3\n", 4, "a.speed", "unknown setting; valid:"),
        ('[a]\nttft_ms = "fast"\ntokens_per_s = 2\n', 2, "a.ttft_ms", "expected a number, got 'fast'"),
        ("[a]\nttft_ms = 1\ntokens_per_s = 0\n", 3, "a.tokens_per_s", "must be > 0, got 0"),
        ("[a]\nttft_ms = 1\ntokens_per_s = 2\nmax_batch = 2.5\n", 4, "a.max_batch", "expected an integer"),
        ('[a]\n\nbase = "nope"\n', 3, "a.base", "unknown base profile 'nope'; valid: 2xh100"),
        ("x = 1\n[a]\nttft_ms = 1\n", 1, "x", "expected a table per profile"),
        ("[a]\nttft_ms = 1\n", 1, "a", "missing tokens_per_s"),
        ('["b c"]\nttft_ms = 1\ntokens_per_s = 2\n', 1, "b c", "a profile name uses letters"),
        ("[my-llama-3.1-8b]\nttft_ms = 1\n", 1, "my-llama-3.1-8b", "must be quoted"),
        ("[a]\nttft_ms = \n", 2, None, "invalid TOML"),
    ],
)
def test_bad_profiles_file_names_file_line_and_field(
    tmp_path: Path, text: str, line: int, field: str | None, fragment: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_profiles(path)
    error = info.value
    assert (error.path, error.line, error.field) == (str(path), line, field)
    assert fragment in str(error)
    assert str(error).startswith(f"{path}:{line}: ")


def test_missing_profiles_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="profiles file not found"):
        load_profiles(tmp_path / "none.toml")


def test_with_overrides_checks_values() -> None:
    p = with_overrides(PROFILES["groq-llama-3.3-70b"], {"ttft_ms": 50, "tokens_per_s": 1000})
    assert (p.ttft_ms, p.tokens_per_s, p.name) == (50, 1000, "groq-llama-3.3-70b")
    with pytest.raises(ConfigError, match=r"tokens_per_s: must be > 0, got -1"):
        with_overrides(p, {"tokens_per_s": -1})
    with pytest.raises(ConfigError, match="unknown setting"):
        with_overrides(p, {"speed": 1})
    with pytest.raises(ConfigError, match="jitter: must be >= 0"):
        dataclasses.replace(p, jitter=-0.1)


# --------------------------------------------------------------------------- the emulated LLM stage


def virtual_first_tokens(config: EmulatedLLMConfig, request: LLMRequest) -> tuple[EmulatedLLM, list[int]]:
    async def main(clock: Clock) -> tuple[EmulatedLLM, list[int]]:
        llm = EmulatedLLM(config, SessionContext(clock=clock, sample_rate=16000, frame_samples=320))
        start = clock.now_ns()
        times = [clock.now_ns() - start async for d in llm.stream(request) if d.text]
        return llm, times

    return clock_mod.run(main, virtual=True)


REPLY = "Sure, I can help with that. What time works for you tomorrow?"
REQUEST = LLMRequest(
    messages=[
        {"role": "system", "content": "You are a helpful voice assistant. Keep answers short."},
        {"role": "user", "content": "Can I book a table for two people tomorrow evening?"},
    ],
    turn=3,
    scripted_reply=REPLY,
)
PROMPT_TOKENS = sum(estimate_tokens(m["content"]) for m in REQUEST.messages)


def test_emulated_llm_with_profile_first_token_includes_prefill() -> None:
    profile = PROFILES["2xh100-fp8-llama-3.3-70b"]
    config = EmulatedLLMConfig(profile=profile.name, seed=4)
    llm, times = virtual_first_tokens(config, REQUEST)
    assert llm.profile == profile
    expected_ttft = ttft_ns(profile, PROMPT_TOKENS, 1, random.Random("4:3"))  # same seeded draw
    assert times[0] == expected_ttft
    # and without TTFT jitter it is exactly base + prompt / prefill speed
    _, times = virtual_first_tokens(dataclasses.replace(config, ttft_jitter_ms=0, jitter=0), REQUEST)
    assert times[0] == round(8e6 + PROMPT_TOKENS * 1e9 / 12_500)
    assert len(times) == len(tokenize(REPLY))
    for i, t in enumerate(times):
        assert abs(t - (times[0] + i * 1e9 / 53)) <= 1


def test_explicit_settings_override_the_profile() -> None:
    config = EmulatedLLMConfig(
        profile="groq-llama-3.3-70b", ttft_ms=120, tokens_per_s=500, jitter=0, ttft_jitter_ms=0
    )
    llm, times = virtual_first_tokens(config, REQUEST)
    assert (llm.profile.ttft_ms, llm.profile.tokens_per_s, llm.profile.jitter) == (120, 500, 0)
    assert llm.profile.prefill_tokens_per_s == 8_000  # not overridden: from the profile
    assert times[0] == round(120e6 + PROMPT_TOKENS * 1e9 / 8_000)
    assert times[1] - times[0] == 2 * MS


def test_no_profile_keeps_the_builtin_defaults() -> None:
    config = EmulatedLLMConfig()
    assert (config.ttft_ms, config.tokens_per_s, config.jitter, config.ttft_jitter_ms) == (200, 300, 0, 0)
    profile = resolve_profile(config)
    assert (profile.ttft_ms, profile.tokens_per_s, profile.prefill_tokens_per_s) == (200, 300, None)
    _, times = virtual_first_tokens(config, REQUEST)
    assert times[0] == 200 * MS  # no prefill cost without a profile that models it


def test_config_records_the_numbers_it_runs_with() -> None:
    # Filled in from the profile at construction, so the run manifest shows them.
    config = EmulatedLLMConfig(profile="cerebras-llama-3.1-70b", tokens_per_s=400)
    assert (config.ttft_ms, config.tokens_per_s, config.jitter, config.ttft_jitter_ms) == (200, 400, 0.1, 20)
    assert EmulatedLLMConfig(profile="cerebras-llama-3.1-70b", ttft_ms=200, tokens_per_s=400) == config


def test_unknown_profile_fails_at_pipeline_load_with_location(tmp_path: Path) -> None:
    text = (
        '[vad]\nkind = "oracle"\n[asr]\nkind = "emulated"\n\n[llm]\nkind = "emulated"\nprofile = "tpu-v9"\n'
    )
    text += '[tts]\nkind = "emulated"\n'
    with pytest.raises(ConfigError) as info:
        parse_pipeline(text, tmp_path / "p.toml")
    error = info.value
    assert (error.line, error.field) == (8, "llm.profile")
    assert "'tpu-v9'" in str(error) and "groq-llama-3.3-70b" in str(error)
    # built in code rather than loaded: still a ConfigError naming the valid profiles
    with pytest.raises(ConfigError, match=r"unknown accelerator profile 'tpu-v9'; valid: .*cerebras"):
        resolve_profile(EmulatedLLMConfig(profile="tpu-v9"))


# --------------------------------------------------------------------------- `vlt profiles` and the docs


def test_vlt_profiles_lists_every_profile(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert vlt_main(["profiles"]) == 0
    out = capsys.readouterr().out
    for name, profile in PROFILES.items():
        row = next(line for line in out.splitlines() if line.startswith(name + " "))
        assert profile.date in row and profile.source in row
    assert "approximate" in out
    path = write(tmp_path, '[mine]\nttft_ms = 1\ntokens_per_s = 2\nsource = "me"\ndate = "today"\n')
    assert vlt_main(["profiles", "--profiles-file", str(path), "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "| mine | mine |" in out and out.startswith("| profile |")


def test_vlt_profiles_bad_file_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write(tmp_path, "[a]\nttft_ms = -1\ntokens_per_s = 2\n")
    assert vlt_main(["profiles", "--profiles-file", str(path)]) == 2
    assert capsys.readouterr().err.strip() == f"vlt: error: {path}:2: a.ttft_ms: must be >= 0, got -1"


def test_docs_table_lists_every_profile() -> None:
    docs = (ROOT / "docs" / "accelerators.md").read_text(encoding="utf-8")
    for name in PROFILES:
        assert f"| {name} |" in docs, name


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_profiles_file_with_nan_or_inf_names_file_line_and_field(tmp_path: Path, value: str) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(f'["my-gpu"]\nttft_ms = 100\ntokens_per_s = {value}\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_profiles(path)
    assert (info.value.path, info.value.line, info.value.field) == (str(path), 3, "my-gpu.tokens_per_s")
    assert "must be a finite number" in str(info.value)


def test_command_line_overrides_refuse_nan() -> None:
    with pytest.raises(ConfigError, match="must be a finite number"):
        with_overrides(PROFILES["groq-llama-3.3-70b"], {"ttft_ms": float("nan")})
    with pytest.raises(ConfigError, match="must be a finite number"):  # a profile built in code
        dataclasses.replace(PROFILES["groq-llama-3.3-70b"], jitter=float("inf"))


def test_a_profiles_file_that_is_not_utf8_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_bytes(b'["my-gpu"]\nttft_ms = 100\nnotes = "caf\xe9"\n')
    with pytest.raises(ConfigError) as info:
        load_profiles(path)
    assert str(info.value).startswith(f"{path}:3: not UTF-8 text (byte 37")
