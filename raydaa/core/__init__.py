"""Pure maths: the method registry and loss configuration, the DAA losses, log-probs.

No Ray and no model I/O here; every other layer may import this one.
"""
