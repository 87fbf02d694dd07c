"""xastopo: topological vs trivial classification of materials from K-edge XANES."""

__version__ = "0.1.0"
