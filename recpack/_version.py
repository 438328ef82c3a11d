"""The version, on the ground floor so that any layer may name it in what it writes."""

__version__ = "0.1.0"
