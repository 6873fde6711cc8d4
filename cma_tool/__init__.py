"""cma-tool: plan, generate, deploy and cross-check Linux CMA reservations."""

__version__ = "0.1.0"
