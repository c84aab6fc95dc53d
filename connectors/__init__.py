"""Input connectors: `files` (containers, compression, locators), one module per record format (see `base` for
what a format module provides and `detect` for the auto-detection order), and `sources` (source specs and mixtures).
"""
