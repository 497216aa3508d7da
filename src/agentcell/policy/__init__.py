"""Policy: rules that judge specs and running containers, and the admission gate."""

from agentcell.policy.admission import AdmittedSpec, AllOf, AnyOf, Finding, Policy, admit
from agentcell.policy.presets import preset

__all__ = ["AdmittedSpec", "AllOf", "AnyOf", "Finding", "Policy", "admit", "preset"]
