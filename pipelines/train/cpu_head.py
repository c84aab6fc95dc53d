"""A faster LM head for TRL's trainers on a CPU: score only the positions that have labels, in bfloat16 GEMMs.

TRL (1.16) gives SFT and DPO a fused LM head (`trl.trainer.utils.add_fused_lm_head`): per-token log-probs without
the `[tokens, vocab]` logits. Off Triton devices it scores every position, padding and DPO's prompts included, runs
its backward GEMMs in fp32 and folds each tile with a dozen elementwise passes; on SmolLM2-135M (a 49,152-word
vocabulary) that was 58% of an SFT step here (`torch.profiler`). `install()` swaps in, on CPU tensors only:
- compaction: the hidden states of labelled positions only go through the head (TRL's Triton path does the same);
- `CpuLogProbs`: one token chunk's logits at a time, the GEMMs in the autocast dtype with their sums in fp32 (as
  autocast's linear layers), `logsumexp` and `softmax` as single fused passes, the target's gradient by index.
Every other case (CUDA, a bias, softcapping, a logit scale, a temperature) goes to TRL's own function. The result
is the same per-token log-probs, entropy and top-1 flags (`tests/test_train_speed.py` compares them with TRL's).
"""

from __future__ import annotations

import torch

TOKEN_CHUNK = 1024  # tokens whose fp32 logits are held at once: 1024 x 49,152 x 4 bytes = 200 MB


def install() -> bool:
    """Route TRL's fused LM head through `CpuLogProbs` for CPU tensors; False if this TRL lacks the hooks."""
    import trl.trainer.utils as trl_utils

    if getattr(trl_utils, "_cpu_head_installed", False):
        return True
    if not all(hasattr(trl_utils, name) for name in ("_use_triton", "_ChunkedLogProbFunction")):
        return False
    on_triton, trl_function = trl_utils._use_triton, trl_utils._ChunkedLogProbFunction

    class Dispatch:
        @staticmethod
        def apply(hidden, weight, bias, targets, temperature, chunk_size, softcap=None, logit_scale=1.0,
                  outputs=("log_probs",)):
            if hidden.device.type == "cpu" and bias is None and softcap is None and logit_scale == 1.0 \
                    and temperature == 1.0:
                return CpuLogProbs.apply(hidden, weight, targets, tuple(outputs))
            return trl_function.apply(hidden, weight, bias, targets, temperature, chunk_size, softcap, logit_scale,
                                      outputs)

    trl_utils._use_triton = lambda device: device.type == "cpu" or on_triton(device)  # compact the positions
    trl_utils._ChunkedLogProbFunction = Dispatch
    trl_utils._cpu_head_installed = True
    return True


class CpuLogProbs(torch.autograd.Function):
    """Per-token `log p(target)` of `hidden @ weight.T`, plus the entropy, `log sum p^2`, mean logit and top-1 flag
    when `outputs` names them (else None), as TRL's `ChunkedLogProbFunction` returns them. Only the log-probs and the
    entropy carry gradients (TRL's metrics detach the rest)."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, outputs):
        ctx.set_materialize_grads(False)
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else hidden.dtype
        h, w = hidden.to(dtype), weight.to(dtype)
        n = h.shape[0]
        out = {name: torch.empty(n, dtype=torch.bool if name == "is_top1" else torch.float32) for name in outputs}
        log_z = torch.empty(n, dtype=torch.float32)
        for start in range(0, n, TOKEN_CHUNK):
            end = min(start + TOKEN_CHUNK, n)
            z = torch.mm(h[start:end], w.t()).float()
            log_z[start:end] = torch.logsumexp(z, -1)
            out["log_probs"][start:end] = z.gather(1, targets[start:end, None]).squeeze(1) - log_z[start:end]
            if "entropy" in out:
                out["entropy"][start:end] = log_z[start:end] - (torch.softmax(z, -1) * z).sum(-1)
            if "log_sum_sq_probs" in out:
                out["log_sum_sq_probs"][start:end] = torch.logsumexp(2 * z, -1) - 2 * log_z[start:end]
            if "mean_logits" in out:
                out["mean_logits"][start:end] = z.mean(-1)
            if "is_top1" in out:
                out["is_top1"][start:end] = z.argmax(-1) == targets[start:end]  # the first maximum, as TRL's
        entropy = out.get("entropy")
        ctx.save_for_backward(h, w, targets, log_z, log_z if entropy is None else entropy)
        ctx.dtypes = hidden.dtype, weight.dtype
        ctx.mark_non_differentiable(*(out[k] for k in ("log_sum_sq_probs", "mean_logits", "is_top1") if k in out))
        return tuple(out.get(k) for k in ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1"))

    @staticmethod
    def backward(ctx, grad_log_probs, grad_entropy, *_):
        h, w, targets, log_z, entropy = ctx.saved_tensors
        needs_hidden, needs_weight = ctx.needs_input_grad[:2]
        grad_hidden = torch.empty(h.shape, dtype=torch.float32) if needs_hidden else None
        grad_weight = torch.zeros(w.shape, dtype=torch.float32) if needs_weight else None
        for start in range(0, h.shape[0], TOKEN_CHUNK):
            end = min(start + TOKEN_CHUNK, h.shape[0])
            z = torch.mm(h[start:end], w.t()).float()
            p = torch.softmax(z, -1)
            grad = torch.zeros_like(p) if grad_log_probs is None and grad_entropy is None else None
            if grad_entropy is not None:  # dH / dz_j = -p_j (log p_j + H)
                log_p = z.sub_(log_z[start:end, None])
                grad = p * log_p.add_(entropy[start:end, None]).mul_(-grad_entropy[start:end, None].float())
            if grad_log_probs is not None:  # d log p_t / dz_j = [j = t] - p_j, in place of p
                g = grad_log_probs[start:end, None].float()
                p.mul_(-g).scatter_add_(1, targets[start:end, None], g)
                grad = p if grad is None else grad.add_(p)
            grad = grad.to(h.dtype)
            if needs_hidden:
                grad_hidden[start:end] = torch.mm(grad, w)
            if needs_weight:
                grad_weight.add_(torch.mm(grad.t(), h[start:end]))
        return (None if grad_hidden is None else grad_hidden.to(ctx.dtypes[0]),
                None if grad_weight is None else grad_weight.to(ctx.dtypes[1]), None, None)
