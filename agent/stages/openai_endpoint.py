"""Where an OpenAI-compatible chat server lives: provider presets, the ``openai`` stage config, its endpoint.

:func:`resolve` checks a stage config against its provider's preset and gives
the :class:`Endpoint` the stage (:mod:`agent.stages.llm_openai`) talks to: the
chat-completions URL, the model, and which environment variable holds the key.
Pure: no environment, no network.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from agent.errors import ConfigError

__all__ = ["EMULATOR_PROVIDER", "PRESETS", "Endpoint", "OpenAILLMConfig", "Preset", "resolve"]

#: The testbed's own accelerator emulator: the only server sent the ``vlt`` body field.
EMULATOR_PROVIDER = "vlt-emulator"


@dataclass(frozen=True, slots=True)
class Preset:
    """Where a provider lives and how it authenticates."""

    base_url: str
    api_key_env: str = ""
    """Environment variable holding the key by default ("" = send no key)."""
    key_required: bool = False
    default_model: str | None = None
    """Sent when the pipeline sets no ``model``; None means ``model`` is required."""
    note: str = ""


PRESETS: dict[str, Preset] = {
    "groq": Preset(
        "https://api.groq.com/openai/v1",
        "GROQ_API_KEY",
        True,
        note="Groq LPU. Reports x_groq.usage (queue/prompt/completion/total time, s) in the last chunk.",
    ),
    "cerebras": Preset(
        "https://api.cerebras.ai/v1",
        "CEREBRAS_API_KEY",
        True,
        note="Cerebras WSE. Reports time_info (queue/prompt/completion/total time, s).",
    ),
    "sambanova": Preset(
        "https://api.sambanova.ai/v1",
        "SAMBANOVA_API_KEY",
        True,
        note="SambaNova SN40L. Its usage chunk carries extra timing fields, kept as server timing.",
    ),
    "together": Preset("https://api.together.xyz/v1", "TOGETHER_API_KEY", True, note="Together AI (GPU)."),
    "fireworks": Preset(
        "https://api.fireworks.ai/inference/v1", "FIREWORKS_API_KEY", True, note="Fireworks AI (GPU)."
    ),
    "openai": Preset("https://api.openai.com/v1", "OPENAI_API_KEY", True, note="OpenAI."),
    "vllm": Preset(
        "http://127.0.0.1:8000/v1",
        note="vLLM `vllm serve`; model = the served model name; set api_key_env if started with --api-key.",
    ),
    "sglang": Preset(
        "http://127.0.0.1:30000/v1", default_model="default", note="SGLang `python -m sglang.launch_server`."
    ),
    "llamacpp-server": Preset(
        "http://127.0.0.1:8080/v1",
        default_model="default",
        note="llama.cpp `llama-server` (model is ignored). Reports timings (prompt_ms, predicted_ms, ...).",
    ),
    "ollama": Preset(
        "http://127.0.0.1:11434/v1", note="Ollama's OpenAI-compatible /v1; model = a pulled tag."
    ),
    EMULATOR_PROVIDER: Preset(
        "http://127.0.0.1:8000/v1",
        default_model="vlt-emulator",
        note="The testbed's accelerator emulator (`vlt serve llm-emulator`); speaks the scripted reply.",
    ),
}


@dataclass(frozen=True, slots=True)
class OpenAILLMConfig:
    provider: str = field(default="", metadata={"choices": tuple(PRESETS)})
    """A preset (see PRESETS) giving base_url and api_key_env; "" = none, set base_url."""
    base_url: str = ""
    """The API root, ending in /v1 (overrides the preset's)."""
    model: str = ""
    """Model name as the server knows it (required unless the preset has a default)."""
    api_key_env: str = ""
    """NAME of the environment variable holding the API key ("" = the preset's).
    Naming one makes the key required."""
    max_tokens: int = field(default=150, metadata={"min": 1})
    temperature: float = field(default=0.7, metadata={"min": 0})
    connect_timeout_s: float = field(default=5.0, metadata={"min_exclusive": 0})
    """TCP + TLS connect timeout."""
    read_timeout_s: float = field(default=30.0, metadata={"min_exclusive": 0})
    """Longest silence allowed between two reads (before the headers or mid-stream)."""
    keepalive_s: float = field(default=5.0, metadata={"min": 0})
    """How long an idle connection is kept for the next turn (httpx's default is 5 s;
    turns further apart than this pay a new TCP/TLS handshake inside their TTFT)."""
    headers: dict[str, str] = field(default_factory=dict)
    """Extra request headers (not the key: use api_key_env)."""
    include_usage: bool = True
    """Ask for the usage chunk (stream_options.include_usage) for server token counts."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A config resolved against its preset (pure: no environment, no network)."""

    backend: str
    """``openai:<provider or host>``, the name errors and logs use."""
    url: str
    """The chat-completions URL."""
    model: str
    api_key_env: str
    key_required: bool
    emulator: bool


def resolve(config: OpenAILLMConfig) -> Endpoint:
    """Check ``config`` and fill in its preset; raises :class:`ConfigError`."""
    preset = None
    if config.provider:
        preset = PRESETS.get(config.provider)
        if preset is None:
            raise ConfigError(
                f"unknown provider {config.provider!r}; valid presets: {', '.join(PRESETS)}",
                field="llm.provider",
            )
    base_url = (config.base_url or (preset.base_url if preset else "")).rstrip("/")
    if not base_url:
        raise ConfigError(
            f"set base_url (e.g. http://127.0.0.1:8000/v1) or a provider: {', '.join(PRESETS)}",
            field="llm.base_url",
        )
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"base_url must be an http:// or https:// URL, got {base_url!r}", field="llm.base_url"
        )
    backend = f"openai:{config.provider or parts.netloc.rpartition('@')[2]}"
    model = config.model or (preset.default_model if preset else None)
    if not model:
        raise ConfigError(f"{backend} needs a model name: set model", field="llm.model")
    for name, value in config.headers.items():
        if not isinstance(value, str):
            raise ConfigError(f"header {name!r} must be a string, got {value!r}", field="llm.headers")
        if name.lower() == "authorization":
            # A key written into a pipeline file ends up in manifests and git.
            raise ConfigError(
                "do not put Authorization in headers: set api_key_env to the NAME of the "
                "environment variable holding the key",
                field="llm.headers",
            )
    key_env = config.api_key_env or (preset.api_key_env if preset else "")
    required = bool(config.api_key_env) or (preset is not None and preset.key_required)
    return Endpoint(
        backend=backend,
        url=f"{base_url}/chat/completions",
        model=model,
        api_key_env=key_env,
        key_required=required,
        emulator=config.provider == EMULATOR_PROVIDER,
    )
