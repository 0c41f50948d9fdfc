"""The simulated platform: realistic traffic for every stream, and a publisher that sends it."""

from leadstream.sim.platform import DEFAULT_TENANTS, Platform
from leadstream.sim.publish import PublishError, SimResult, StreamCounts, simulate

__all__ = ["DEFAULT_TENANTS", "Platform", "PublishError", "SimResult", "StreamCounts", "simulate"]
