"""Batch inference: the champion scores every symbol's latest prepared day."""
