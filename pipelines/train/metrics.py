"""Preference metrics on held-out pairs, computed the same way before and after DPO.

For each pair, `logp` is the summed log-probability of the completion tokens (the assistant turn and its end
token) given the prompt, on exactly the sequences DPOTrainer trains on (its tokenization, its collator, its
truncation). With `ref` the reference model's logps:

- reward accuracy: share of pairs with beta*(logp_c - ref_c) > beta*(logp_r - ref_r), TRL's `rewards/accuracies`;
- reward margin: mean of that difference, TRL's `rewards/margins`;
- log-likelihood accuracy: share of pairs with logp_c > logp_r (summed), and with the per-token mean.

Before training the policy is the reference, so both rewards are 0: reward accuracy 0 and margin 0 by definition.
The log-likelihood accuracies are the informative numbers there: how often the model already prefers the chosen answer.
"""

from __future__ import annotations


def evaluate_preferences(model, pairs, collator, *, beta: float, batch_size: int, reference=None, bf16=False):
    """Score tokenized `pairs` (prompt_ids, chosen_ids, rejected_ids) under `model`; returns (metrics, logps).

    `logps` is an [n, 2, 2] tensor: (chosen, rejected) x (summed logp, completion tokens). Pass the `logps` of
    the reference model as `reference`; without it the model is its own reference.
    """
    import torch

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    rows = []
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        for start in range(0, len(pairs), batch_size):
            batch = collator([pairs[i] for i in range(start, min(start + batch_size, len(pairs)))])
            input_ids = batch["input_ids"].to(device)
            logits = model(input_ids=input_ids, attention_mask=batch["attention_mask"].to(device)).logits
            token_logps = logits[:, :-1].float().log_softmax(-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
            mask = batch["completion_mask"][:, 1:].to(device)
            summed, count = (token_logps * mask).sum(1), mask.sum(1).float()
            chosen, rejected = torch.stack([summed, count], -1).cpu().chunk(2)  # collator: chosen rows, then rejected
            rows.append(torch.stack([chosen, rejected], 1))
    model.train(was_training)
    logps = torch.cat(rows)
    return preference_metrics(logps, logps if reference is None else reference, beta), logps


def preference_metrics(logps, ref_logps, beta: float) -> dict:
    """The metrics from [n, 2, 2] logps (see `evaluate_preferences`).

    One pair, beta=0.1: logp (c, r) = (-10, -14), ref = (-12, -13) -> rewards (0.2, -0.1), margin 0.3, both accurate.
    """
    logp, tokens = logps[..., 0].double(), logps[..., 1].double()
    reward = beta * (logp - ref_logps[..., 0].double())
    per_token = logp / tokens.clamp(min=1)
    return {
        "reward_accuracy": (reward[:, 0] > reward[:, 1]).double().mean().item(),
        "reward_margin": (reward[:, 0] - reward[:, 1]).mean().item(),
        "loglik_accuracy": (logp[:, 0] > logp[:, 1]).double().mean().item(),
        "loglik_accuracy_per_token": (per_token[:, 0] > per_token[:, 1]).double().mean().item(),
        "logp_chosen": logp[:, 0].mean().item(),
        "logp_rejected": logp[:, 1].mean().item(),
    }


def format_table(before: dict, after: dict) -> str:
    """A small before/after table of the metrics."""
    lines = [f"{'':28}{'before':>10}{'after':>10}"]
    for key in before:
        lines.append(f"{key:28}{before[key]:>10.4f}{after[key]:>10.4f}")
    return "\n".join(lines)
