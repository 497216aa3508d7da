"""The ``agentcell/v1`` spec: models, units and the YAML loader.

This layer imports nothing of agentcell's but :mod:`agentcell.errors`.
"""

from agentcell.spec.load import SpecDocument, load_paths, load_text
from agentcell.spec.model import AgentDocument, AgentSpec

__all__ = ["AgentDocument", "AgentSpec", "SpecDocument", "load_paths", "load_text"]
