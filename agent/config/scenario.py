"""Scenario files: the scripted conversations the replay client speaks into an agent.

A scenario is data, not code: a YAML file listing what the caller says in each
turn, how long they pause first (or when they interrupt the agent), and what
the agent's reply should contain. See ``docs/scenarios.md`` for the format.

The loader is strict and checks everything before a replay starts, because a
typo discovered halfway through a sweep costs far more than a fussy loader.
Every problem names file, line and field::

    scenarios/x.yaml:14: turns[2].pause_ms: expected a number >= 0, got 'soon'

To keep line numbers the YAML is *composed* into nodes rather than loaded into
plain dicts; that also lets us reject duplicate keys, which PyYAML would
silently collapse to the last one.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NoReturn

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from agent.errors import ScenarioError

__all__ = [
    "DEFAULT_NO_REPLY_WINDOW_MS",
    "DEFAULT_PAUSE_MS",
    "DEFAULT_REPLY_TIMEOUT_MS",
    "MAX_PAUSE_MS",
    "MAX_REPLY_TIMEOUT_MS",
    "Assertions",
    "Expectation",
    "Scenario",
    "Turn",
    "load_scenario",
    "parse_scenario",
]

DEFAULT_PAUSE_MS = 600.0
"""A natural conversational gap before the caller speaks."""
DEFAULT_REPLY_TIMEOUT_MS = 15000.0
"""How long a turn may wait for the agent's reply before it counts as failed."""

DEFAULT_NO_REPLY_WINDOW_MS = 2000.0
"""How long after a no-reply turn (noise, a cough, "mm-hm") the caller listens for a
spurious reply before going on: longer than endpointing + TTFT + TTS of any agent
worth measuring."""

MAX_PAUSE_MS = 120_000.0
"""Upper bound of ``pause_ms`` and ``barge_in_ms`` (2 minutes): a replay
records every millisecond of a pause and, in virtual time, steps through it;
a longer wait is a typo (seconds written as ms), not a conversation."""
MAX_REPLY_TIMEOUT_MS = 300_000.0
"""Upper bound of ``reply_timeout_ms`` and ``max_v2v_ms`` (5 minutes)."""

_TOP_KEYS = ("name", "description", "defaults", "turns", "assert")
_DEFAULT_KEYS = ("pause_ms", "reply_timeout_ms", "no_reply_window_ms")
_TURN_KEYS = ("user", "wav", "text", "reply", "pause_ms", "barge_in_ms", "expect", "noise")
_EXPECT_KEYS = ("contains", "max_v2v_ms", "no_reply")
_ASSERT_KEYS = ("v2v_p50_ms", "v2v_p95_ms", "missed_responses", "wer")
#: The longest generated noise turn.
MAX_NOISE_MS = 10_000.0

_TAG = "tag:yaml.org,2002:"
_NUMBER_TAGS = (_TAG + "int", _TAG + "float")


@dataclass(frozen=True, slots=True)
class Expectation:
    """What a turn's reply must satisfy; the default expects nothing."""

    contains: tuple[str, ...] = ()
    """Words or phrases the agent's reply must contain (case-insensitive)."""
    max_v2v_ms: float | None = None
    """Largest acceptable voice-to-voice latency for this turn."""
    no_reply: bool = False
    """The turn is not for the agent (noise, a cough, a backchannel "mm-hm"): it must
    not answer within the scenario's ``no_reply_window_ms``, nor stop a reply it
    talks over (a false barge-in)."""

    def missing(self, reply: str) -> tuple[str, ...]:
        """The ``contains`` phrases absent from ``reply``, ignoring case and spacing."""
        said = " ".join(reply.casefold().split())
        return tuple(p for p in self.contains if " ".join(p.casefold().split()) not in said)


@dataclass(frozen=True, slots=True)
class Turn:
    """One thing the caller says, and when."""

    index: int
    """0-based position in the scenario (error messages use it too: ``turns[2]``)."""
    line: int
    """1-based line in the YAML file where the turn starts."""
    text: str
    """What the user says; for a wav turn its optional transcript, else ``""``."""
    wav: Path | None = None
    """Absolute path of a recording to send instead of rendering ``text``."""
    reply: str | None = None
    """Scripted agent reply, the text source of emulated LLMs."""
    pause_ms: float = DEFAULT_PAUSE_MS
    """Silence after the previous reply ends (turn 0: after the session starts)."""
    barge_in_ms: float | None = None
    """If set, speak this long after the previous reply became audible, interrupting it."""
    expect: Expectation = Expectation()
    """Checks on the agent's reply to this turn."""
    noise_ms: float | None = None
    """A generated noise burst this long (a cough-like sound) instead of speech."""


@dataclass(frozen=True, slots=True)
class Assertions:
    """Scenario-level checks on the whole run (the ``assert`` block); None: not checked."""

    v2v_p50_ms: float | None = None
    v2v_p95_ms: float | None = None
    missed_responses: int | None = None
    """Most turns allowed without a reply (no-reply turns do not count)."""
    wer: float | None = None
    """Largest pooled word error rate of the agent's transcripts."""


@dataclass(frozen=True, slots=True)
class Scenario:
    """A validated scenario file."""

    name: str
    description: str
    path: Path
    """Absolute path of the file it was loaded from."""
    turns: tuple[Turn, ...]
    reply_timeout_ms: float = DEFAULT_REPLY_TIMEOUT_MS
    """How long to wait for an agent reply before marking the turn failed."""
    no_reply_window_ms: float = DEFAULT_NO_REPLY_WINDOW_MS
    """How long to listen for a spurious reply after a no-reply turn."""
    assertions: Assertions | None = None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dump of what was loaded, for the run manifest."""
        data = asdict(self)
        data["path"] = str(self.path)
        data["turns"] = [
            {**turn, "wav": None if turn["wav"] is None else str(turn["wav"])} for turn in data["turns"]
        ]
        # Features a scenario does not use stay out of the dump, so that a baseline's
        # scenario hash (agent.metrics.baseline) of an older scenario file still matches.
        for turn in data["turns"]:
            if turn["noise_ms"] is None:
                del turn["noise_ms"]
            if not turn["expect"]["no_reply"]:
                del turn["expect"]["no_reply"]
        if data["assertions"] is None:
            del data["assertions"]
        if self.no_reply_window_ms == DEFAULT_NO_REPLY_WINDOW_MS:
            del data["no_reply_window_ms"]
        return data


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file; any problem raises :class:`ScenarioError`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError("scenario file not found", path=path) from None
    except UnicodeDecodeError as exc:
        line = exc.object.count(b"\n", 0, exc.start) + 1 if isinstance(exc.object, bytes) else None
        raise ScenarioError(
            f"not UTF-8 text (byte {exc.start}: {exc.reason})", path=path, line=line
        ) from None
    except OSError as exc:
        raise ScenarioError(f"cannot read the file: {exc.strerror}", path=path) from None
    return parse_scenario(text, path)


def parse_scenario(text: str, path: str | Path) -> Scenario:
    """Validate scenario YAML ``text``; ``path`` names it in errors and anchors wav paths."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        context = f" ({exc.context})" if exc.context else ""
        if exc.context and exc.context_mark and mark and exc.context_mark.line != mark.line:
            context = f" ({exc.context} started on line {exc.context_mark.line + 1})"
        raise ScenarioError(
            f"invalid YAML: {exc.problem}{context}",
            path=path,
            line=None if mark is None else mark.line + 1,
        ) from None
    except yaml.YAMLError as exc:
        raise ScenarioError(f"invalid YAML: {exc}", path=path) from None
    if root is None:
        raise ScenarioError("the file is empty; a scenario needs at least 'turns'", path=path)
    return _Reader(path).scenario(root)


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


class _Reader:
    """Turns composed YAML nodes into typed values, failing with file:line: field."""

    def __init__(self, path: str | Path) -> None:
        self.path = path
        self.folder = Path(path).parent
        self.constructor = SafeConstructor()

    def fail(self, node: Node, field: str, message: str) -> NoReturn:
        line = node.start_mark.line + 1
        raise ScenarioError(message, path=self.path, line=line, field=field or None)

    def describe(self, node: Node) -> str:
        """How a wrong value reads in an error message."""
        if isinstance(node, MappingNode):
            return "a mapping"
        if isinstance(node, SequenceNode):
            return "a list"
        if node.tag == _TAG + "str":
            return repr(node.value)
        if node.tag == _TAG + "null":
            return "nothing (null)"
        if node.tag == _TAG + "bool":
            return f"{node.value} (a boolean)"
        return str(node.value)

    def mapping(self, node: Node, field: str, allowed: Sequence[str]) -> dict[str, Node]:
        """A mapping's values by key, after rejecting unknown and duplicate keys."""
        if not isinstance(node, MappingNode):
            self.fail(node, field, f"expected a mapping of key: value, got {self.describe(node)}")
        keys: dict[str, Node] = {}
        values: dict[str, Node] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, ScalarNode) else None
            if not isinstance(key, str) or key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f"did you mean '{close[0]}'? " if close else ""
                valid = ", ".join(allowed)
                unknown = f"unknown key {self.describe(key_node)}; {hint}valid keys: {valid}"
                self.fail(key_node, field, unknown)
            if key in keys:
                first = keys[key].start_mark.line + 1
                self.fail(key_node, _join(field, key), f"duplicate key (first given on line {first})")
            keys[key] = key_node
            values[key] = value_node
        return values

    def string(self, node: Node, field: str) -> str:
        if isinstance(node, ScalarNode) and node.tag == _TAG + "str":
            text = str(node.value).strip()
            if not text:
                self.fail(node, field, "must not be empty")
            return text
        hint = ""
        if isinstance(node, ScalarNode) and node.tag != _TAG + "null":
            hint = "; put it in quotes if it is meant as text"
        self.fail(node, field, f"expected a non-empty string, got {self.describe(node)}{hint}")

    def number(self, node: Node, field: str, *, positive: bool, at_most: float) -> float:
        bound = "> 0" if positive else ">= 0"
        if isinstance(node, ScalarNode) and node.tag in _NUMBER_TAGS:
            try:
                value = float(self.constructor.construct_object(node))
            except (ValueError, OverflowError, yaml.YAMLError):  # OverflowError: an int past 1e308
                value = math.nan
            if math.isfinite(value) and (value > 0 or (value == 0 and not positive)):
                if value > at_most:
                    self.fail(node, field, f"must be <= {at_most:g} ms, got {self.describe(node)}")
                return value
        self.fail(node, field, f"expected a number {bound}, got {self.describe(node)}")

    def opt_string(self, values: dict[str, Node], key: str, prefix: str) -> str | None:
        node = values.get(key)
        return None if node is None else self.string(node, _join(prefix, key))

    def opt_number(
        self, values: dict[str, Node], key: str, prefix: str, *, positive: bool, at_most: float
    ) -> float | None:
        node = values.get(key)
        return (
            None
            if node is None
            else self.number(node, _join(prefix, key), positive=positive, at_most=at_most)
        )

    def scenario(self, root: Node) -> Scenario:
        top = self.mapping(root, "", _TOP_KEYS)
        name = self.opt_string(top, "name", "") or Path(self.path).stem
        description = self.opt_string(top, "description", "") or ""
        pause_ms, timeout_ms = DEFAULT_PAUSE_MS, DEFAULT_REPLY_TIMEOUT_MS
        window_ms = DEFAULT_NO_REPLY_WINDOW_MS
        if "defaults" in top:
            defaults = self.mapping(top["defaults"], "defaults", _DEFAULT_KEYS)
            if "pause_ms" in defaults:
                pause_ms = self.number(
                    defaults["pause_ms"], "defaults.pause_ms", positive=False, at_most=MAX_PAUSE_MS
                )
            if "reply_timeout_ms" in defaults:
                node = defaults["reply_timeout_ms"]
                timeout_ms = self.number(
                    node, "defaults.reply_timeout_ms", positive=True, at_most=MAX_REPLY_TIMEOUT_MS
                )
            if "no_reply_window_ms" in defaults:
                node = defaults["no_reply_window_ms"]
                window_ms = self.number(
                    node, "defaults.no_reply_window_ms", positive=True, at_most=MAX_REPLY_TIMEOUT_MS
                )
        if "turns" not in top:
            self.fail(root, "turns", "missing: a scenario needs a list of turns")
        node = top["turns"]
        if not isinstance(node, SequenceNode):
            self.fail(node, "turns", f"expected a list of turns, got {self.describe(node)}")
        if not node.value:
            self.fail(node, "turns", "the list is empty; add at least one turn")
        turns = tuple(self.turn(i, item, pause_ms) for i, item in enumerate(node.value))
        assertions = self.assertions(top["assert"]) if "assert" in top else None
        return Scenario(
            name, description, Path(self.path).resolve(), turns, timeout_ms, window_ms, assertions
        )

    def assertions(self, node: Node) -> Assertions:
        values = self.mapping(node, "assert", _ASSERT_KEYS)
        p50 = self.opt_number(values, "v2v_p50_ms", "assert", positive=True, at_most=MAX_REPLY_TIMEOUT_MS)
        p95 = self.opt_number(values, "v2v_p95_ms", "assert", positive=True, at_most=MAX_REPLY_TIMEOUT_MS)
        missed = None
        if "missed_responses" in values:
            missed_node = values["missed_responses"]
            if not (isinstance(missed_node, ScalarNode) and missed_node.tag == _TAG + "int"):
                got = self.describe(missed_node)
                self.fail(missed_node, "assert.missed_responses", f"expected a whole number >= 0, got {got}")
            missed = int(self.constructor.construct_object(missed_node))
            if missed < 0:
                self.fail(
                    missed_node, "assert.missed_responses", f"expected a whole number >= 0, got {missed}"
                )
        wer = None
        if "wer" in values:
            wer = self.number(values["wer"], "assert.wer", positive=False, at_most=MAX_REPLY_TIMEOUT_MS)
            if wer > 1:
                self.fail(values["wer"], "assert.wer", f"is a fraction of words (0 to 1), got {wer:g}")
        if p50 is None and p95 is None and missed is None and wer is None:
            self.fail(node, "assert", f"is empty; give at least one of {', '.join(_ASSERT_KEYS)}")
        return Assertions(p50, p95, missed, wer)

    def turn(self, index: int, node: Node, default_pause_ms: float) -> Turn:
        here = f"turns[{index}]"
        values = self.mapping(node, here, _TURN_KEYS)
        sources = [k for k in ("user", "wav", "noise") if k in values]
        if len(sources) != 1:
            which = (
                f"both {' and '.join(repr(k) for k in sources)}" if sources else "neither 'user' and 'wav'"
            )
            self.fail(node, here, f"has {which}; give exactly one of 'user', 'wav' and 'noise'")
        if "text" in values and "wav" not in values:
            self.fail(values["text"], f"{here}.text", "only allowed with 'wav' (its transcript)")
        noise_ms = self.opt_number(values, "noise", here, positive=True, at_most=MAX_NOISE_MS)
        wav = None
        if "wav" in values:
            wav = (self.folder / self.string(values["wav"], f"{here}.wav")).resolve()
            if not wav.is_file():
                self.fail(values["wav"], f"{here}.wav", f"file not found: {wav}")
        text = self.opt_string(values, "user", here) or self.opt_string(values, "text", here)
        pause_ms = self.opt_number(values, "pause_ms", here, positive=False, at_most=MAX_PAUSE_MS)
        barge_in_ms = self.opt_number(values, "barge_in_ms", here, positive=False, at_most=MAX_PAUSE_MS)
        if barge_in_ms is not None and index == 0:
            no_reply = "not allowed on the first turn: there is no agent reply yet to interrupt"
            self.fail(values["barge_in_ms"], f"{here}.barge_in_ms", no_reply)
        if barge_in_ms is not None and pause_ms is not None:
            both = "cannot be combined with barge_in_ms, which times the turn instead"
            self.fail(values["pause_ms"], f"{here}.pause_ms", both)
        expect = Expectation()
        if "expect" in values:
            expect = self.expectation(values["expect"], f"{here}.expect")
        return Turn(
            index=index,
            line=node.start_mark.line + 1,
            text=text or "",
            wav=wav,
            reply=self.opt_string(values, "reply", here),
            pause_ms=default_pause_ms if pause_ms is None else pause_ms,
            barge_in_ms=barge_in_ms,
            expect=expect,
            noise_ms=noise_ms,
        )

    def expectation(self, node: Node, here: str) -> Expectation:
        values = self.mapping(node, here, _EXPECT_KEYS)
        contains: tuple[str, ...] = ()
        phrases = values.get("contains")
        if isinstance(phrases, SequenceNode):
            items = enumerate(phrases.value)
            contains = tuple(self.string(item, f"{here}.contains[{i}]") for i, item in items)
        elif isinstance(phrases, ScalarNode) and phrases.tag == _TAG + "str":
            contains = (self.string(phrases, f"{here}.contains"),)
        elif phrases is not None:
            got = self.describe(phrases)
            self.fail(phrases, f"{here}.contains", f"expected a list of strings, got {got}")
        no_reply = False
        if "no_reply" in values:
            flag = values["no_reply"]
            if not (isinstance(flag, ScalarNode) and flag.tag == _TAG + "bool"):
                self.fail(flag, f"{here}.no_reply", f"expected true or false, got {self.describe(flag)}")
            no_reply = bool(self.constructor.construct_object(flag))
        max_v2v = self.opt_number(values, "max_v2v_ms", here, positive=True, at_most=MAX_REPLY_TIMEOUT_MS)
        if no_reply and (contains or max_v2v is not None):
            self.fail(values["no_reply"], f"{here}.no_reply", "cannot be combined with checks on a reply")
        return Expectation(contains, max_v2v, no_reply)
