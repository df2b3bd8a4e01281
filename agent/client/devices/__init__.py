"""The live client's local sound: PortAudio devices and streams, the playout
(jitter) buffer that feeds the speaker, and the PulseAudio virtual microphone
and speaker for machines without audio hardware.
"""
