"""The CPU LM head (`pipelines.train.cpu_head`) against TRL's own fused head: the same per-token outputs and
gradients, and the trainers really go through it."""

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from trl.kernels import ChunkedLogProbFunction  # noqa: E402

from pipelines.train import cpu_head  # noqa: E402

OUTPUTS = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")


def run(function, hidden, weight, targets, autocast):
    hidden.grad = weight.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        if function is ChunkedLogProbFunction:
            outs = function.apply(hidden, weight, None, targets, 1.0, 2048, None, 1.0, OUTPUTS)
        else:
            outs = function.apply(hidden, weight, targets, OUTPUTS)
    (outs[0].sum() + 0.3 * outs[1].sum()).backward()  # a gradient through the entropy too
    return [o.detach() for o in outs] + [hidden.grad.clone(), weight.grad.clone()]


@pytest.mark.parametrize("autocast", [False, True])
def test_same_outputs_and_gradients_as_trl(autocast, monkeypatch):
    monkeypatch.setattr(cpu_head, "TOKEN_CHUNK", 128)  # several token chunks
    torch.manual_seed(0)
    hidden = torch.randn(300, 64, requires_grad=True)
    weight = (torch.randn(5000, 64) * 0.3).requires_grad_()
    targets = torch.randint(0, 5000, (300,))
    theirs = run(ChunkedLogProbFunction, hidden, weight, targets, autocast)
    ours = run(cpu_head.CpuLogProbs, hidden, weight, targets, autocast)
    # fp32: the same sums in another order; bf16: the backward GEMMs round their products as autocast's do
    tolerance = 1e-2 if autocast else 1e-4
    for name, a, b in zip((*OUTPUTS, "hidden grad", "weight grad"), theirs, ours):
        if a.dtype == torch.bool:
            assert torch.equal(a, b), name
        else:
            assert torch.allclose(a, b, atol=tolerance * a.abs().max().item()), name


def test_no_labelled_position_gives_zero_gradients():
    hidden = torch.randn(0, 8, requires_grad=True)
    weight = torch.randn(50, 8, requires_grad=True)
    log_probs, *_ = cpu_head.CpuLogProbs.apply(hidden, weight, torch.zeros(0, dtype=torch.long), ("log_probs",))
    log_probs.sum().backward()
    assert weight.grad is not None and weight.grad.abs().sum() == 0


def test_the_trainers_head_goes_through_it():
    """After `install()`, a model with TRL's fused head scores only the labelled positions through `CpuLogProbs`,
    and its loss equals the model's own cross-entropy."""
    import trl.trainer.utils as trl_utils
    from transformers import LlamaConfig, LlamaForCausalLM

    assert cpu_head.install() and cpu_head.install()  # a second call changes nothing
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=4))
    trl_utils.add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
    ids = torch.randint(0, 300, (2, 12))
    labels = ids.clone()
    labels[:, :5] = -100  # a prompt that is not scored
    calls = []
    original = cpu_head.CpuLogProbs.apply
    try:
        cpu_head.CpuLogProbs.apply = lambda hidden, *args: calls.append(hidden.shape[0]) or original(hidden, *args)
        fused = model(input_ids=ids, labels=labels, fused_lm_head=True).loss
    finally:
        cpu_head.CpuLogProbs.apply = original
    assert calls == [2 * 7]  # the labelled positions only: 12 - 5 per row, shifted by one
    assert torch.allclose(fused, model(input_ids=ids, labels=labels).loss, atol=1e-5)
