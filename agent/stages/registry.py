"""Stage kinds by role: what a pipeline file may name, and how each is built.

Adding a backend means adding one entry here: its config dataclass (the keys
a pipeline file may set, with defaults and bounds in field metadata) and a
builder. Heavy backends import their dependencies inside the builder, so a
missing optional package only matters to pipelines that use it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.stages.asr import EmulatedASR, EmulatedASRConfig
from agent.stages.asr_whisper import WhisperASR, WhisperASRConfig  # faster_whisper loads when built
from agent.stages.end_of_turn import SemanticVAD, SemanticVADConfig
from agent.stages.interfaces import SessionContext
from agent.stages.llm import EmulatedLLM, EmulatedLLMConfig
from agent.stages.llm_llamacpp import LlamaCppLLM, LlamaCppLLMConfig  # llama_cpp loads with a model
from agent.stages.llm_openai import OpenAILLM  # httpx loads when one is built
from agent.stages.openai_endpoint import OpenAILLMConfig
from agent.stages.remote import RemoteASR, RemoteASRConfig, RemoteTTS, RemoteTTSConfig
from agent.stages.tts import EmulatedTTS, EmulatedTTSConfig
from agent.stages.tts_piper import PiperTTS, PiperTTSConfig  # piper loads when one is built
from agent.stages.vad import OracleVAD, OracleVADConfig
from agent.stages.vad_silero import EnergyVAD, EnergyVADConfig, SileroVAD, SileroVADConfig

__all__ = ["REGISTRY", "ROLES", "StageKind", "kinds_for"]

ROLES = ("vad", "asr", "llm", "tts")


@dataclass(frozen=True, slots=True)
class StageKind:
    role: str
    kind: str
    config_type: type[Any]
    build: Callable[[Any, SessionContext], Any]
    description: str
    #: Runs deterministically under ``--clock virtual`` (no real compute, no network).
    virtual_time: bool = False


REGISTRY: dict[str, dict[str, StageKind]] = {role: {} for role in ROLES}


def _register(entry: StageKind) -> None:
    REGISTRY[entry.role][entry.kind] = entry


_register(
    StageKind(
        "vad",
        "oracle",
        OracleVADConfig,
        OracleVAD,
        "end of turn = true end of speech + endpoint_ms",
        virtual_time=True,
    )
)
_register(
    StageKind(
        "asr",
        "emulated",
        EmulatedASRConfig,
        EmulatedASR,
        "the scenario's text after finalize_ms",
        virtual_time=True,
    )
)
_register(
    StageKind(
        "llm",
        "emulated",
        EmulatedLLMConfig,
        EmulatedLLM,
        "scripted or built-in reply at ttft_ms / tokens_per_s",
        virtual_time=True,
    )
)
_register(
    StageKind(
        "llm",
        "openai",
        OpenAILLMConfig,
        OpenAILLM,
        "any OpenAI-compatible streaming server (provider presets: groq, cerebras, vllm, ...)",
        virtual_time=False,
    )
)
_register(
    StageKind(
        "llm",
        "llamacpp",
        LlamaCppLLMConfig,
        LlamaCppLLM,
        "a GGUF model in-process via llama-cpp-python (default SmolLM2-135M; extra: llamacpp)",
        virtual_time=False,
    )
)
_register(
    StageKind(
        "tts",
        "emulated",
        EmulatedTTSConfig,
        EmulatedTTS,
        "speech-like audio after first_audio_ms at rtf",
        virtual_time=True,
    )
)
_register(
    StageKind(
        "tts",
        "piper",
        PiperTTSConfig,
        PiperTTS,
        "Piper neural TTS on the CPU (default voice en_US-joe-medium; extra: speech)",
        virtual_time=False,
    )
)
# Remote stages time a real network round trip to a service computing in real
# time, so they never run under --clock virtual.
_register(
    StageKind(
        "asr",
        "remote-asr",
        RemoteASRConfig,
        RemoteASR,
        "the ASR of a `vlt serve asr` service at url, with delay_ms/jitter_ms network impairment",
        virtual_time=False,
    )
)
_register(
    StageKind(
        "tts",
        "remote-tts",
        RemoteTTSConfig,
        RemoteTTS,
        "the TTS of a `vlt serve tts` service at url, with delay_ms/jitter_ms network impairment",
        virtual_time=False,
    )
)

# Real speech stages (docs/speech.md): onnxruntime and faster-whisper are
# imported when one is built; the models load once per process.
_register(
    StageKind(
        "vad",
        "silero",
        SileroVADConfig,
        SileroVAD,
        "Silero VAD v6 (ONNX, bundled with faster-whisper) with endpoint_ms of silence (extra: speech)",
        virtual_time=False,
    )
)
_register(
    StageKind(
        "vad",
        "semantic",
        SemanticVADConfig,
        SemanticVAD,
        "Silero VAD + Smart Turn v3.2 + transcript completeness, adaptive silence window "
        "(extra: speech; weights: pip install --no-deps pipecat-ai)",
        virtual_time=False,
    )
)
_register(
    StageKind(
        "vad",
        "energy",
        EnergyVADConfig,
        EnergyVAD,
        "RMS level >= threshold_dbfs, end of turn after endpoint_ms of silence (for comparison)",
        virtual_time=False,
    )
)
_register(
    StageKind(
        "asr",
        "faster-whisper",
        WhisperASRConfig,
        WhisperASR,
        "streaming Whisper tiny.en (CTranslate2 int8) with partials and speculation (extra: speech)",
        virtual_time=False,
    )
)


def kinds_for(role: str) -> list[str]:
    return sorted(REGISTRY[role])
