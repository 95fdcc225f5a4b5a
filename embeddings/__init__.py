"""Encoders (torch) and the Ray Data embedding pipeline."""
