"""reasonless: maze A* reasoning traces, generated, verified and learned."""
__version__ = "0.1.0"
