"""The embedding pipeline behind ``w2v embed`` and ``w2v.embed``."""
