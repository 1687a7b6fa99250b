"""Monitoring: prediction quality and drift over time, and the retraining trigger."""
