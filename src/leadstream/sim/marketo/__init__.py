"""A simulated Marketo instance (SPEC §10.2): the documented REST API of one instance over simulated traffic."""

from leadstream.sim.marketo.faults import FAULT_KINDS, Faults, parse_faults
from leadstream.sim.marketo.instance import MarketoInstance, run_marketo
from leadstream.sim.marketo.limits import CallStats, Limits

__all__ = ["FAULT_KINDS", "CallStats", "Faults", "Limits", "MarketoInstance", "parse_faults", "run_marketo"]
