"""PortAudio's stream times onto the session clock (pure arithmetic; ``time_info`` is a
plain object with PortAudio's three fields, as its callback struct has them)."""

from __future__ import annotations

from types import SimpleNamespace

from agent.client.devices.stream_times import captured_end_ns, heard_start_ns


def test_an_input_block_is_stamped_at_its_last_samples_capture() -> None:
    # The block's first sample was at the ADC 60 ms before the callback; it holds 20 ms.
    info = SimpleNamespace(currentTime=100.060, inputBufferAdcTime=100.000, outputBufferDacTime=0.0)
    t, latency = captured_end_ns(5_000_000_000, info, 320, 16000)
    assert t == 5_000_000_000 - 40_000_000
    assert latency is not None and abs(latency - 40.0) < 1e-6


def test_an_output_block_is_heard_at_its_dac_time() -> None:
    info = SimpleNamespace(currentTime=7.0, inputBufferAdcTime=0.0, outputBufferDacTime=7.045)
    t, latency = heard_start_ns(1_000_000_000, info)
    assert t == 1_045_000_000
    assert latency is not None and abs(latency - 45.0) < 1e-6


def test_unreported_or_nonsense_times_keep_the_callback_time() -> None:
    for info in (
        SimpleNamespace(currentTime=0.0, inputBufferAdcTime=0.0, outputBufferDacTime=0.0),
        SimpleNamespace(currentTime=5.0, inputBufferAdcTime=9.0, outputBufferDacTime=1.0),  # backwards
        SimpleNamespace(currentTime=5.0, inputBufferAdcTime=1.0, outputBufferDacTime=9.0),  # 4 s: garbage
        object(),  # no fields at all
    ):
        assert captured_end_ns(123, info, 320, 16000) == (123, None)
        assert heard_start_ns(123, info) == (123, None)


def test_a_capture_time_never_follows_the_callback() -> None:
    # A block "captured" 5 ms ago cannot end 15 ms in the future.
    info = SimpleNamespace(currentTime=1.005, inputBufferAdcTime=1.0, outputBufferDacTime=0.0)
    t, latency = captured_end_ns(10_000_000, info, 320, 16000)
    assert t == 10_000_000 and latency == 0.0
