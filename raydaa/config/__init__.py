"""Scenario and search-space files loaded into typed dataclasses; no Ray, no torch."""
