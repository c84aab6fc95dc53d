"""The release layer: what ships beside an export, made after a run: dataset cards, lineage (input files, hashes,
licenses, prompt hashes), the run report and the card's pictures.

It may import everything below it (`schemas`, `connectors`, `pipelines.core`, `pipelines.data`, `pipelines.dedup`,
`pipelines.teacher`, `pipelines.prompts`, `pipelines.stages`) and its peer `pipelines.engines`, never a recipe or a
command (tests/test_layers.py).
"""
