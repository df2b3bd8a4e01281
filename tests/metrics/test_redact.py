"""agent.metrics.redact: known secrets and key-shaped strings never survive, in any field."""

from __future__ import annotations

from agent.metrics.redact import MASK, add_secret, known_secrets, redact, redact_value

KEY = "sk-test-S3cr3tK3yThatMustNeverLeak0123456789"


def test_a_known_secret_is_masked_wherever_it_appears() -> None:
    secrets = ("not-shaped-like-a-key-0042",)
    text = "echo not-shaped-like-a-key-0042 and again not-shaped-like-a-key-0042."
    assert redact(text, secrets) == f"echo {MASK} and again {MASK}."


def test_key_shapes_are_masked_without_being_registered() -> None:
    assert redact(f"key {KEY} end", ()) == f"key {MASK} end"
    assert redact("gsk_abcdefghijklmnop1234 x", ()) == f"{MASK} x"
    assert redact("Authorization: Bearer abc.def-123", ()) == f"Authorization: Bearer {MASK}"
    # Words that merely contain the letters are left alone.
    assert redact("a task-force of asks", ()) == "a task-force of asks"
    assert redact("sk-short", ()) == "sk-short"


def test_redacting_before_truncating_leaves_no_prefix() -> None:
    body = "x" * 289 + " " + KEY  # a 300-character cut keeps 10 characters of the key
    cut_then_masked = redact(body[:300], ("a-different-secret",)).replace("x", "").strip()
    masked_then_cut = redact(body, ())[:300].replace("x", "").strip()
    assert cut_then_masked.startswith("sk-test-S")  # the leak the order prevents
    assert masked_then_cut == MASK


def test_values_are_copied_with_every_string_masked_keys_included() -> None:
    record = {
        "llm": {"server_timing": {"source": "groq", "queue_time": KEY, KEY: 1, "n": [KEY, 2.5, None]}},
        "reply": f"my key is {KEY}",
        "turn": 3,
    }
    out = redact_value(record, ())
    assert KEY not in repr(out)
    assert out["llm"]["server_timing"] == {
        "source": "groq",
        "queue_time": MASK,
        MASK: 1,
        "n": [MASK, 2.5, None],
    }
    assert out["turn"] == 3 and KEY in record["reply"]  # the original is untouched


def test_registered_secrets_are_used_by_default_and_short_ones_ignored() -> None:
    add_secret("plain-registered-value-77")
    add_secret("short")
    assert "plain-registered-value-77" in known_secrets() and "short" not in known_secrets()
    assert redact("v=plain-registered-value-77 short") == f"v={MASK} short"
