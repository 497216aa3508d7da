"""The Python client of agentcell's host service."""
