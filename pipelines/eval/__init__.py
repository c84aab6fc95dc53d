"""`python -m pipelines.eval MODEL [--baseline MODEL] [--suites gsm8k,judged]`: what a trained model can do, measured.

- `models.py`: what MODEL names (a trained model dir, exported to GGUF on first use; a GGUF file; an embedded model;
  an OpenAI-compatible endpoint) and the teacher client settings that serve it.
- `suites/`: one small module per suite (`gsm8k`, `judged`), each turning items into requests through the one teacher
  client and scoring the answers per item.
- `stats.py`: bootstrap confidence intervals, paired differences against a baseline.
- `__main__.py`: the command: the eval directory's lock, the request cache (a rerun or a killed eval replays its
  answers), one JSON file per suite and a report table.
"""
