"""hwprune: make a trained CNN meet a latency budget on a given device, without its training data."""

__version__ = "0.1.0"
