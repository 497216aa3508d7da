"""Integration tests of the host service and its sandbox engine."""
