"""Input connectors: `walk` (finding a source's files), `streams` (decompression, encoding checks, the `Raw` record),
`json_text` (JSON lines and arrays) and `files` (`read_records` by container, locators); one module per record format
(see `base` for what a format module provides and `detect` for the auto-detection order); and `sources` (source specs
and mixtures).
"""
