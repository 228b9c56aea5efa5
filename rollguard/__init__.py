"""rollguard: safe rollouts of ML models on live traffic."""

__version__ = "0.1.0"
