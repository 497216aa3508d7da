"""agentcell: run agent services in hardened container cells and prove the isolation holds."""

__version__ = "0.1.0"
__all__ = ["__version__"]
