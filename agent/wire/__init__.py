"""What travels between processes: the agent's websocket protocol, the ASR/TTS
service protocol and the SSE parser of OpenAI-compatible streams.

Pure: encode/decode and validation only, no sockets and no clock.
"""
