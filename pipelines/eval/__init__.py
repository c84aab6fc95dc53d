"""`python -m pipelines.eval MODEL [--baseline MODEL] [--suites ifbench,ifeval_dev,gsm8k,judged,prefs]`: what a
trained model can do, measured.

- `models.py`: what MODEL names (a trained model dir, exported to GGUF on first use; a GGUF file; an embedded model;
  an OpenAI-compatible endpoint with budget and batch settings) and the teacher client settings that serve it.
- `suites/`: one small module per suite, each turning items into requests through the one teacher client and
  scoring the answers per item; a user's own in `PIPELINES_SUITE_PATH` folders.
- `following.py`: the instruction-following suites (their checks: `pipelines.prompts.following`; IFEval's
  constraints drawn onto an instruction: `pipelines.prompts.verified_if`; IFBench's prompts and the NLTK data from
  pinned wheels: `pipelines.teacher.eval_data`).
- `stats.py`: bootstrap confidence intervals, paired differences against a baseline.
- `lineage.py`: the training data of a model, found through its lineage, removed from the suites' items.
- `__main__.py`: the command: the eval directory's lock, the request cache (a rerun or a killed eval replays its
  answers), one JSON file per suite and a report table.
"""
