"""mitigate: measure and remove disagreements between a model and its quantized copies."""

__version__ = "0.1.0"
__all__ = ["__version__"]
