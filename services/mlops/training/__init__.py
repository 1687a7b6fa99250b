"""Training: Ludwig models tracked in MLflow, promoted to champion only when they win."""
