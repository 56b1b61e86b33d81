"""Self-hosted handwriting recognition: a from-scratch numpy backprop engine, served by Flask."""

__version__ = "0.1.0"
