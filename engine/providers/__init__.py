"""Model providers: one protocol (base.py), one adapter per backend."""
