"""Pipelines by name: the defaults, and where a bare name is looked up.

``vlt`` commands, the pytest plugin and the benchmarks accept a pipeline as a
path or as a bare name (``emulated``), so the lookup lives here, beside the
loader, rather than in the command line.
"""

from __future__ import annotations

from pathlib import Path

from agent.errors import ConfigError

__all__ = ["DEFAULT_PIPELINE", "PROJECT_ROOT", "VIRTUAL_DEFAULT_PIPELINE", "resolve_pipeline"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
#: The embedded default: real VAD, ASR and TTS on the CPU (models ship in PyPI
#: packages, extra ``speech``) and the accelerator-emulated LLM; no keys or servers.
DEFAULT_PIPELINE = "default"
#: What ``--clock virtual`` replays when no pipeline is named: real models
#: compute in real time, so virtual time needs the all-emulated pipeline.
VIRTUAL_DEFAULT_PIPELINE = "emulated"


def resolve_pipeline(name_or_path: str) -> Path:
    """A path as given, or a bare name looked up in ``./pipelines`` and the project's."""
    path = Path(name_or_path)
    if path.exists() or path.suffix or "/" in name_or_path:
        return path
    for folder in (Path.cwd() / "pipelines", PROJECT_ROOT / "pipelines"):
        candidate = folder / f"{name_or_path}.toml"
        if candidate.exists():
            return candidate
    raise ConfigError(
        f"no pipeline named {name_or_path!r} (looked in ./pipelines and {PROJECT_ROOT / 'pipelines'})"
    )
