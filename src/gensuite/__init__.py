"""gensuite: train, evaluate and compare generative model families on one parts zoo."""

__version__ = "0.1.0"
