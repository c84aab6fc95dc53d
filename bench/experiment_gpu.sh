#!/usr/bin/env bash
# `zephyr` at a larger size on one CUDA GPU, aimed at 10 minutes: twice the dialogues and pairs of the CPU default,
# full fine-tunes (not LoRA) in bf16 with bigger batches, and 100 items per suite. Training runs on the GPU; the
# builds' teacher and the evals' server are the embedded llama-server on the machine's CPU cores.
#
#   bash bench/experiment_gpu.sh [EXPERIMENT_DIR]      (default runs/zephyr-gpu; rerun to resume)
#
# Prints the experiment's report (scores with CIs, each step's time and peak memory) and the total wall time.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-runs/zephyr-gpu}"
python - <<'EOF'
import torch
if not torch.cuda.is_available():
    raise SystemExit("no CUDA GPU visible: this benchmark is for a GPU machine (install a CUDA build of torch)")
print("GPU:", torch.cuda.get_device_name(0), f"({torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB)")
EOF
start=$(date +%s)
python -m pipelines.experiment zephyr --dir "$dir" \
  --set dialogues.n_dialogues=120 --set pairs.n_prompts=80 \
  --set sft.lora=false --set sft.bf16=true --set sft.batch_size=16 --set sft.learning_rate=2e-5 --set sft.epochs=2 \
  --set dpo.lora=false --set dpo.bf16=true --set dpo.batch_size=16 --set dpo.learning_rate=5e-7 --set dpo.epochs=2 \
  --set eval_sft.limit=100 --set eval_dpo.limit=100
echo "zephyr on one GPU: $(( $(date +%s) - start )) s wall (target: 600 s)"
