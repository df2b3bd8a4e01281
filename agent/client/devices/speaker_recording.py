"""Recording what plays into the virtual speaker (``vlt_speaker``) to a WAV file.

``parec`` of ``vlt_speaker.monitor`` runs in the background from
:func:`record_speaker` until :meth:`SpeakerRecording.stop`. The speaker's
silence feeder (:mod:`agent.client.devices.silence_feeders`) keeps the sink rendering,
so the recording's sample positions follow the wall clock and onsets in it can
be timed. Needs the virtual devices up (:func:`agent.client.devices.virtual_audio.start`).
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType

from agent.client.devices.pulse_tools import READY_S, VirtualAudioError, has_stream, require_tool, tool_env
from agent.client.devices.virtual_audio import SPEAKER_SINK
from agent.clock import Deadline

__all__ = ["SpeakerRecording", "record_speaker"]

_RECORD_NAME = "vlt-record-speaker"


class SpeakerRecording:
    """A running ``parec`` of ``vlt_speaker.monitor`` into a 16-bit mono WAV file.

    Use as a context manager or call :meth:`stop`, which returns the file's path.
    """

    def __init__(self, path: Path, rate: int, proc: subprocess.Popen[bytes]) -> None:
        self.path = path
        self.rate = rate
        self.proc = proc

    def stop(self, timeout: float = 5.0) -> Path:
        """End the recording and return the file.

        SIGTERM, not SIGINT: parec finishes the WAV header on either, but a
        process started from a background job inherits SIGINT ignored.
        """
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        if not self.path.exists():
            message = err.decode(errors="replace").strip()
            raise VirtualAudioError(f"parec wrote no {self.path}: {message or 'no message'}")
        return self.path

    def __enter__(self) -> SpeakerRecording:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def record_speaker(path: str | Path, rate: int = 16000) -> SpeakerRecording:
    """Record what plays into ``vlt_speaker`` (16-bit mono WAV at ``rate``) until ``stop()``.

    Returns once parec's stream is connected, so nothing played after this is missed.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            require_tool("parec"),
            f"--device={SPEAKER_SINK}.monitor",
            f"--rate={rate}",
            "--channels=1",
            "--format=s16le",
            "--file-format=wav",
            "--latency-msec=20",
            f"--client-name={_RECORD_NAME}",
            str(out),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=tool_env(),
    )
    recording = SpeakerRecording(out, rate, proc)
    deadline = Deadline(READY_S)
    while not has_stream("source-outputs", proc.pid):
        if proc.poll() is not None or deadline.expired():
            _, err = proc.communicate() if proc.poll() is not None else (None, b"")
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
            message = (err or b"").decode(errors="replace").strip()
            raise VirtualAudioError(
                f"cannot record {SPEAKER_SINK}.monitor: {message or 'parec did not connect'} "
                "(is the virtual mic up? vlt virtual-mic start)"
            )
        time.sleep(0.02)
    return recording
