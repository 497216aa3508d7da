"""Unit tests of agentcell.verify."""
