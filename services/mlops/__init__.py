"""MLOps pipeline for daily stock prediction and paper trading."""

__version__ = "0.1.0"
