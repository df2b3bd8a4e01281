"""Voice Latency Testbed: measure a streaming voice agent hop by hop.

The package is organised so that time is data (:mod:`agent.clock` is the only
module that reads a clock), metrics are pure functions (:mod:`agent.metrics.timeline`),
and I/O lives at the edges (:mod:`agent.server`, :mod:`agent.client`).
"""

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__ = version("voice-latency-testbed")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
