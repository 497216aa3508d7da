"""The reference monitoring agent. Standard library only: it runs alone in a minimal image.

Modules import one another relatively, so the package also works copied on its own into the
agent image (as ``agentcell_agent``) without the rest of agentcell.
"""
