"""raydaa: Direct Alignment Algorithms as a Ray platform (paper: "The Differences Between
Direct Alignment Algorithms are a Blur")."""

__version__ = "0.1.0"
