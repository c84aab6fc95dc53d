"""The teacher layer: the client that sends requests to a teacher (`client.py`, the only module that opens sockets),
its cache, budget and batch mode, the embedded engine (`server.py` runs what `llama.py` finds or builds, on the
weights `weights.py` fetches) and the teacher-stage contract (`stage.py`).

It may import `schemas`, `connectors`, `pipelines.core`, `pipelines.data` and its peer layer `pipelines.dedup`
(tests/test_layers.py), never a prompt module, stage, engine or recipe.
"""
