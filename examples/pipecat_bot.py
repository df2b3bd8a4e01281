"""A Pipecat voice bot whose LLM is vlt's emulator: the accelerator swept under a foreign agent.

Pipecat 1.14: websocket server transport with the protobuf serializer, Silero
VAD, Pipecat's ``OpenAILLMService`` pointed at ``--llm-url`` (``vlt serve
llm-emulator``, or ``{llm_url}`` under ``vlt sweep --agent-cmd``), and a
stand-in TTS (a voiced sound as long as the text, 60 ms per character, first
audio at once) — no STT: each end of speech asks the LLM to answer "the
caller". Runs offline, in its own virtualenv (docs/black-box.md):

    vlt sweep --scenario scenarios/quick-3-turn.yaml \\
      --agent-cmd '.venv-pipecat/bin/python examples/pipecat_bot.py --llm-url {llm_url} --port {port}' \\
      --url 'pipecat+ws://127.0.0.1:{port}#rate=16000&reply_end_ms=1000' --tps 50,200 --ttft-ms 100,400
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncGenerator

import numpy as np
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.frames.frames import Frame, LLMContextFrame, TTSAudioRawFrame, VADUserStoppedSpeakingFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.runner import PipelineRunner
from pipecat.pipeline.task import PipelineParams, PipelineTask
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.audio.vad_processor import VADProcessor
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.serializers.protobuf import ProtobufFrameSerializer
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.services.tts_service import TTSService
from pipecat.transports.websocket.server import (
    SingleClientWebsocketServerParams,
    SingleClientWebsocketServerTransport,
)

RATE = 16000
CHUNK = RATE // 50  # 20 ms


def voiced(seconds: float) -> bytes:
    t = np.arange(max(1, int(RATE * seconds))) / RATE
    voice = (
        np.sin(2 * np.pi * 120 * t) + 0.6 * np.sin(2 * np.pi * 730 * t) + 0.4 * np.sin(2 * np.pi * 1090 * t)
    )
    envelope = np.minimum(1.0, t / 0.01) * np.minimum(1.0, (seconds - t) / 0.03).clip(0)
    pcm = voice * envelope / np.abs(voice).max() * 32768 * 10 ** (-12 / 20)
    return pcm.astype("<i2").tobytes()


class AskOnEndOfSpeech(FrameProcessor):
    """Each end of the caller's speech → one LLM request (there is no STT)."""

    def __init__(self) -> None:
        super().__init__()
        self._turns = 0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, VADUserStoppedSpeakingFrame):
            self._turns += 1
            messages = [
                {"role": "system", "content": "You are a helpful shop assistant. Answer briefly."},
                {"role": "user", "content": f"(the caller spoke, turn {self._turns})"},
            ]
            await self.push_frame(LLMContextFrame(context=LLMContext(messages=messages)))


class VoicedTTS(TTSService):
    """A stand-in TTS: a voiced sound 60 ms per character, sent in 20 ms chunks at once."""

    def __init__(self) -> None:
        super().__init__(sample_rate=RATE)

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        audio = voiced(0.06 * len(text.strip()))
        for i in range(0, len(audio), 2 * CHUNK):
            yield TTSAudioRawFrame(
                audio=audio[i : i + 2 * CHUNK], sample_rate=RATE, num_channels=1, context_id=context_id
            )


async def main(host: str, port: int, llm_url: str, stop_secs: float) -> None:
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
    llm = OpenAILLMService(api_key="not-needed", base_url=llm_url, model="emulated")
    pipeline = Pipeline([transport.input(), vad, AskOnEndOfSpeech(), llm, VoicedTTS(), transport.output()])
    task = PipelineTask(
        pipeline, params=PipelineParams(audio_in_sample_rate=RATE, audio_out_sample_rate=RATE)
    )

    @transport.event_handler("on_websocket_ready")
    async def ready(_transport: object) -> None:
        print(f"pipecat bot on ws://{host}:{port}, LLM at {llm_url}", flush=True)

    await PipelineRunner(handle_sigint=True).run(task)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument(
        "--llm-url", required=True, help="OpenAI base_url of the LLM (vlt serve llm-emulator)"
    )
    parser.add_argument("--stop-secs", type=float, default=0.5, help="Silero silence before end of speech")
    args = parser.parse_args()
    asyncio.run(main(args.host, args.port, args.llm_url, args.stop_secs))
