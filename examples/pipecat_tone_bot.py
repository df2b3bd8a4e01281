"""A real Pipecat pipeline to measure as a black box: websocket server transport,
protobuf frames, Silero VAD (bundled with pipecat-ai), and a responder that
answers every end of the caller's speech with a 600 ms speech-like phrase.

It exercises the Pipecat parts a caller meets — transport, serializer, VAD and
its stop_secs, output pacing — with no STT, LLM or TTS, so it runs offline:

    python -m venv .venv-pipecat && .venv-pipecat/bin/pip install 'pipecat-ai==1.14.0'
    .venv-pipecat/bin/python examples/pipecat_tone_bot.py --port 8765 &
    vlt replay scenarios/quick-3-turn.yaml --url 'pipecat+ws://127.0.0.1:8765#rate=16000'

pipecat-ai pins protobuf<7 and soxr~=1.0, which conflict with this project's
environment: run it from its own virtualenv (docs/black-box.md).
"""

from __future__ import annotations

import argparse
import asyncio

import numpy as np
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.frames.frames import Frame, OutputAudioRawFrame, VADUserStoppedSpeakingFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.runner import PipelineRunner
from pipecat.pipeline.task import PipelineParams, PipelineTask
from pipecat.processors.audio.vad_processor import VADProcessor
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.serializers.protobuf import ProtobufFrameSerializer
from pipecat.transports.websocket.server import (
    SingleClientWebsocketServerParams,
    SingleClientWebsocketServerTransport,
)

RATE = 16000
CHUNK = RATE // 50  # 20 ms


def phrase(seconds: float = 0.6) -> bytes:
    """A voiced, vowel-like sound (pulse train through two formants) at -12 dBFS."""
    t = np.arange(int(RATE * seconds)) / RATE
    voice = (
        np.sin(2 * np.pi * 120 * t) + 0.6 * np.sin(2 * np.pi * 730 * t) + 0.4 * np.sin(2 * np.pi * 1090 * t)
    )
    envelope = np.minimum(1.0, t / 0.01) * np.minimum(1.0, (seconds - t) / 0.03)
    pcm = voice * envelope / np.abs(voice).max() * 32768 * 10 ** (-12 / 20)
    return pcm.astype("<i2").tobytes()


class Responder(FrameProcessor):
    """Answers each VAD end of speech with the phrase, in 20 ms output frames."""

    def __init__(self) -> None:
        super().__init__()
        self._phrase = phrase()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, VADUserStoppedSpeakingFrame):
            for i in range(0, len(self._phrase), 2 * CHUNK):
                chunk = self._phrase[i : i + 2 * CHUNK]
                await self.push_frame(OutputAudioRawFrame(audio=chunk, sample_rate=RATE, num_channels=1))


async def main(host: str, port: int, stop_secs: float) -> None:
    transport = SingleClientWebsocketServerTransport(
        params=SingleClientWebsocketServerParams(
            serializer=ProtobufFrameSerializer(),
            audio_in_enabled=True,
            audio_in_sample_rate=RATE,
            audio_out_enabled=True,
            audio_out_sample_rate=RATE,
        ),
        host=host,
        port=port,
    )
    vad = VADProcessor(
        vad_analyzer=SileroVADAnalyzer(sample_rate=RATE, params=VADParams(stop_secs=stop_secs))
    )
    pipeline = Pipeline([transport.input(), vad, Responder(), transport.output()])
    task = PipelineTask(
        pipeline, params=PipelineParams(audio_in_sample_rate=RATE, audio_out_sample_rate=RATE)
    )

    @transport.event_handler("on_websocket_ready")
    async def ready(_transport: object) -> None:
        print(f"pipecat bot on ws://{host}:{port}", flush=True)  # listening: callers may connect

    await PipelineRunner(handle_sigint=True).run(task)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--stop-secs", type=float, default=0.5, help="Silero silence before end of speech")
    args = parser.parse_args()
    asyncio.run(main(args.host, args.port, args.stop_secs))
