"""zephyr: the seed's headline result as one command. UltraChat-style dialogues -> SFT -> UltraFeedback-style pairs
-> DPO, on the embedded SmolLM2-135M-Instruct with LoRA; base, SFT and DPO evaluated on the same items.

    python -m pipelines.experiment zephyr
    python -m pipelines.experiment zephyr --set "pairs.teacher.embedded.model={sft_gguf}"   # on-policy pairs

Off-policy by default (the pairs' completions come from the embedded teacher); `{sft_gguf}` draws them from the SFT
model itself, which later work found better. The `judged` suite's judge is the embedded Qwen2.5-Coder-1.5B: a win
judged by a 1.5B model over a 135M student is weak evidence, and the report says so beside it.
"""

from pipelines.experiment.steps import Build, Eval, Export, Train

ABOUT = ("UltraChat -> SFT -> UltraFeedback -> DPO on SmolLM2-135M-Instruct (LoRA), base vs SFT vs DPO (served as "
         "q8_0) on the same items; the judged suite's judge is a 1.5B model: weak evidence for a 135M student")

SUITES = ("ifeval_dev", "gsm8k", "judged", "prefs")  # prefs: log-likelihood accuracy on the pairs' test_prefs
STEPS = (
    Build("dialogues", recipe="ultrachat", settings={"n_dialogues": 60}),
    Train("sft", kind="sft", data="dialogues", settings={"lora": True, "learning_rate": 1e-4, "epochs": 1,
                                                         "max_length": 768, "batch_size": 4, "bf16": True}),
    Export("sft_gguf", model="sft"),
    Build("pairs", recipe="ultrafeedback", settings={"n_prompts": 40}),
    Train("dpo", kind="dpo", data="pairs", model="sft", settings={"lora": True, "learning_rate": 5e-5, "epochs": 2,
                                                                  "max_length": 512, "batch_size": 4, "bf16": True}),
    Eval("eval_sft", model="sft", baseline="base:smollm2-135m", suites=SUITES,
         settings={"limit": 30, "prefs_export": "{pairs}"}),
    Eval("eval_dpo", model="dpo", baseline="base:smollm2-135m", suites=SUITES,
         settings={"limit": 30, "prefs_export": "{pairs}"}),
)
