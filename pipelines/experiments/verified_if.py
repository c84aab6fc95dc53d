"""verified_if: the student's own answers to IFEval-constrained prompts, checked, then DPO on the student (LoRA);
evaluated against the base on `ifeval_dev` (in distribution) and `ifbench` (constraint types it never saw).

    python -m pipelines.experiment verified_if --seeds 3
    python -m pipelines.experiment verified_if --vary dpo.learning_rate=5e-5,2e-4 --set eval.suites=ifeval_dev

Tune with `--vary` on `ifeval_dev` only; `ifbench` is the test of generalisation, not a dev set.
"""

from pipelines.experiment.steps import Build, Eval, Train

ABOUT = ("verified_if data sampled from SmolLM2-135M itself (on-policy), DPO with LoRA on it, evaluated against the "
         "base (both served as q8_0) on ifeval_dev (in distribution) and ifbench (unseen constraint types)")

STEPS = (
    Build("data", recipe="verified_if", settings={"variants": 4, "samples": 4, "sampling.max_tokens": 192}),
    Train("dpo", kind="dpo", data="data", settings={"lora": True, "learning_rate": 5e-4, "epochs": 2,
                                                    "max_length": 384, "batch_size": 4, "bf16": True}),
    Eval("eval", model="dpo", baseline="base:smollm2-135m", suites=("ifeval_dev", "ifbench"), settings={"limit": 80}),
)
