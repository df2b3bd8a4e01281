"""What `vlt` runs, composed from the server, the client and the stages: a
scenario replay against an in-process agent (runner), the repeated replays of a
regression candidate (candidate), token-speed sweeps and their latency model,
and the live microphone demo.
"""
