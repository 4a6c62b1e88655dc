"""Evaluation of an aligned policy: sampling, KL from the reference, and judges."""
