"""Live telemetry over MQTT: every mark and turn on a broker, for a fleet of hosts.

- :mod:`~agent.telemetry.broker` — the ``--mqtt`` URL and its TLS options (pure).
- :mod:`~agent.telemetry.schema` — topics and the versioned JSON payloads
  (docs/telemetry.md; ``telemetry.schema.json`` beside this file) (pure).
- :mod:`~agent.telemetry.publisher` — publishing off the audio path: a bounded
  queue drained by an MQTT client on its own thread and real-time loop, so a
  broker that is down, slow or refusing never blocks a pipeline.
- :mod:`~agent.telemetry.subscriber` — the receiving side (``vlt watch``,
  ``vlt record``, ``--wait-start``).
- :mod:`~agent.telemetry.fleet` — the live view's per-session figures (pure).
- :mod:`~agent.telemetry.collect` — a fleet's turn records into one run folder.

``aiomqtt`` is imported only by the publisher and subscriber modules, which the
commands import only when ``--mqtt`` is given.
"""
