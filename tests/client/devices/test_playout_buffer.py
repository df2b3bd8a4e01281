"""The playout (jitter) buffer: prebuffering, underruns, flush and play events."""

from __future__ import annotations

import numpy as np

from agent.client.devices.playout_buffer import PlayoutBuffer


def _pcm(n: int, value: int = 1000) -> np.ndarray:
    return np.full(n, value, dtype=np.int16)


def test_waits_for_the_prebuffer_then_plays_in_order() -> None:
    buf = PlayoutBuffer(prebuffer=640)
    buf.push(_pcm(320, 1), turn=0)
    assert not buf.pull(320).pcm.any()  # 320 < 640 queued: silence, nothing consumed
    assert buf.queued == 320
    buf.push(_pcm(320, 2), turn=0)
    out = buf.pull(480)
    assert out.pcm.tolist() == [1] * 320 + [2] * 160
    chunks = [e for e in out.events if e.kind == "chunk"]
    assert [(e.offset, e.start, e.length) for e in chunks] == [(0, 0, 320), (320, 0, 160)]
    rest = buf.pull(320)
    assert rest.pcm.tolist() == [2] * 160 + [0] * 160
    assert [(e.offset, e.start, e.length) for e in rest.events if e.kind == "chunk"] == [(0, 160, 160)]


def test_a_response_shorter_than_the_prebuffer_plays_once_it_ended() -> None:
    buf = PlayoutBuffer(prebuffer=1600)
    buf.push(_pcm(100), turn=3)
    assert not buf.pull(320).pcm.any()
    assert buf.end(3) is False  # still queued
    out = buf.pull(320)
    assert out.pcm[:100].all() and not out.pcm[100:].any()
    assert [e.kind for e in out.events] == ["chunk", "drained"]
    assert out.events[-1].offset == 100


def test_onset_event_is_reported_at_its_block_offset() -> None:
    buf = PlayoutBuffer(prebuffer=0)
    buf.push(_pcm(200, 0), turn=1)
    buf.push(_pcm(400), turn=1, onset=150)
    first = buf.pull(320)
    assert not [e for e in first.events if e.kind == "onset"]
    second = buf.pull(320)
    onset = [e for e in second.events if e.kind == "onset"]
    # 200 samples of the first chunk + 120 of the second were played before;
    # the onset at 150 of the second chunk is at offset 30 of this block.
    assert [(e.turn, e.offset) for e in onset] == [(1, 30)]


def test_an_underrun_is_counted_when_a_response_resumes_after_silence() -> None:
    buf = PlayoutBuffer(prebuffer=320)
    buf.push(_pcm(320), turn=0)
    buf.pull(320)
    buf.pull(320)  # dry mid-response: the device played silence
    buf.push(_pcm(160), turn=0)
    assert buf.underruns == 1
    assert not buf.pull(160).pcm.any()  # re-buffering: 160 < 320 queued
    buf.push(_pcm(160), turn=0)
    assert buf.underruns == 1  # the same gap is counted once
    assert buf.pull(320).pcm.all()


def test_silence_after_a_response_ended_is_not_an_underrun() -> None:
    buf = PlayoutBuffer(prebuffer=320)
    buf.push(_pcm(320), turn=0)
    buf.pull(320)
    buf.pull(320)
    assert buf.end(0) is True  # nothing of turn 0 queued any more
    buf.push(_pcm(320), turn=1)
    assert buf.underruns == 0


def test_flush_silences_the_next_block_and_reports_what_it_dropped() -> None:
    buf = PlayoutBuffer(prebuffer=0)
    buf.push(_pcm(1000), turn=0)
    buf.pull(320)
    dropped = buf.flush()
    assert [c.played for c in dropped] == [320]
    assert buf.dropped_samples == 680 and buf.played_samples == 320
    assert not buf.active
    assert not buf.pull(320).pcm.any()
