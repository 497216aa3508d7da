"""``python3 -m agentcell.agent`` (or the package copied alone into the agent image)."""

from .main import main

main()
