"""dropout-risk: a student dropout-risk MLP whose training is made legible."""

__version__ = "0.1.0"
