"""pipelines: raw corpora and chat logs -> SFT and preference datasets, and a trainer that consumes them."""

__version__ = "0.1.0"
