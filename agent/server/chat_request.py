"""The chat-completions request as the LLM emulator accepts it, and errors in OpenAI's shape.

:func:`parse_chat_request` checks a decoded ``POST /v1/chat/completions`` body
the way OpenAI's API does and answers what it rejects with the same status,
message, ``param`` and ``code`` (:class:`APIError`), so a client under test
meets the errors a real server would send. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from agent.stages.llm import estimate_tokens
from agent.wire.json_guard import JSONDepthError, clip, find_lone_surrogate, loads_limited

__all__ = ["APIError", "ChatRequest", "decode_body", "parse_chat_request"]

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


class APIError(Exception):
    """An error answered in OpenAI's shape: ``{"error": {message, type, param, code}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> web.Response:
        return web.json_response(self.body(), status=self.status, headers=self.headers)


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """The parts of a chat completion request the emulator acts on."""

    messages: list[dict[str, str]]
    """Role and plain-text content of each message (content parts joined)."""
    model: str | None = None
    stream: bool = False
    include_usage: bool = False
    stream_options_given: bool = False
    max_tokens: int | None = None
    scripted_reply: str | None = None
    """From the ``vlt`` field, which only the testbed's own client sends."""
    turn: int | None = None

    @property
    def prompt_tokens(self) -> int:
        return sum(estimate_tokens(m["content"]) for m in self.messages)


def _invalid_type(param: str, expected: str, value: Any) -> APIError:
    got = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    what = got.get(type(value), "a number")
    return APIError(
        400,
        f"Invalid type for '{param}': expected {expected}, but got {what} instead.",
        param=param,
        code="invalid_type",
    )


def _text_of(content: Any, param: str) -> str:
    """Message content as text: a string, null, or a list of ``{"type": "text", "text": ...}`` parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for i, part in enumerate(content):
            if not isinstance(part, dict):
                raise _invalid_type(f"{param}[{i}]", "an object", part)
            text = part.get("text", "")
            if not isinstance(text, str):
                raise _invalid_type(f"{param}[{i}].text", "a string", text)
            texts.append(text)
        return "".join(texts)
    raise _invalid_type(param, "a string or an array", content)


def _optional_int(body: Mapping[str, Any], key: str, minimum: int) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise _invalid_type(key, "an integer", value)
    if value < minimum:
        raise APIError(
            400,
            f"Invalid '{key}': integer below minimum value ({value} < {minimum}).",
            param=key,
            code="integer_below_min_value",
        )
    return value


def decode_body(raw: bytes, max_depth: int) -> Any:
    """A request body → its JSON, or :class:`APIError` 400 in OpenAI's shape.

    Nesting is checked before parsing (``json.loads`` would recurse into a
    ``RecursionError`` and a plain-text 500); a string with a lone UTF-16
    surrogate (``"\\ud800"``) is refused by its ``param``, since no reply or
    token count could be made from it.
    """
    try:
        body = loads_limited(raw, max_depth)
    except JSONDepthError as exc:
        raise APIError(400, f"Invalid JSON body: {exc}", code="json_too_deep") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise APIError(400, f"Invalid JSON body: {clip(str(exc), 200)}") from None
    if (found := find_lone_surrogate(body)) is not None:
        param, what = found
        raise APIError(
            400,
            f"Invalid value for '{param or 'body'}': lone UTF-16 surrogate {what}; "
            "text must be valid Unicode.",
            param=param or None,
            code="invalid_value",
        )
    return body


def parse_chat_request(body: Any) -> ChatRequest:
    """Validate a decoded ``/v1/chat/completions`` body; :class:`APIError` (400) if it is wrong."""
    if not isinstance(body, dict):
        raise APIError(400, "Invalid request body: expected a JSON object.")
    if "messages" not in body:
        raise APIError(
            400,
            "Missing required parameter: 'messages'.",
            param="messages",
            code="missing_required_parameter",
        )
    raw_messages = body["messages"]
    if not isinstance(raw_messages, list):
        raise _invalid_type("messages", "an array", raw_messages)
    if not raw_messages:
        raise APIError(400, "Invalid 'messages': empty array.", param="messages", code="empty_array")
    messages = []
    for i, message in enumerate(raw_messages):
        param = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _invalid_type(param, "an object", message)
        role = message.get("role")
        if role is None:
            raise APIError(
                400,
                f"Missing required parameter: '{param}.role'.",
                param=f"{param}.role",
                code="missing_required_parameter",
            )
        if not isinstance(role, str):
            raise _invalid_type(f"{param}.role", "a string", role)
        if role not in _ROLES:
            raise APIError(
                400,
                f"Invalid value: '{role}'. Supported values are: {', '.join(sorted(_ROLES))}.",
                param=f"{param}.role",
                code="invalid_value",
            )
        messages.append({"role": role, "content": _text_of(message.get("content"), f"{param}.content")})
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise _invalid_type("model", "a string", model)
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _invalid_type("stream", "a boolean", stream)
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        if not isinstance(options, dict):
            raise _invalid_type("stream_options", "an object", options)
        if not stream:
            raise APIError(
                400,
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                param="stream_options",
                code="invalid_value",
            )
        include = options.get("include_usage", False)
        if not isinstance(include, bool):
            raise _invalid_type("stream_options.include_usage", "a boolean", include)
        include_usage = include
    max_tokens = _optional_int(body, "max_completion_tokens", 1)
    if max_tokens is None:
        max_tokens = _optional_int(body, "max_tokens", 1)
    n = _optional_int(body, "n", 1)
    if n not in (None, 1):
        raise APIError(400, "Only n = 1 is supported.", param="n", code="unsupported_value")
    scripted, turn = None, None
    extra = body.get("vlt")
    if extra is not None:
        if not isinstance(extra, dict):
            raise _invalid_type("vlt", "an object", extra)
        scripted = extra.get("scripted_reply")
        if scripted is not None and not isinstance(scripted, str):
            raise _invalid_type("vlt.scripted_reply", "a string", scripted)
        turn = extra.get("turn")
        if turn is not None and (not isinstance(turn, int) or isinstance(turn, bool)):
            raise _invalid_type("vlt.turn", "an integer", turn)
    return ChatRequest(
        messages=messages,
        model=model,
        stream=bool(stream),
        include_usage=include_usage,
        stream_options_given=options is not None,
        max_tokens=max_tokens,
        scripted_reply=scripted,
        turn=turn,
    )
