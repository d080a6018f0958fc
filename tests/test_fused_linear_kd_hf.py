"""One distillation step between two tiny random-config Hugging Face causal LMs (no download):
the fused loss on the last hidden states and lm_heads, with shifted labels, against the same loss
on the models' logits; every student parameter's gradient, then one optimizer step."""

import pytest
import torch
import torch.nn.functional as F

from tests.test_fused_linear_kd_rows import BACKENDS
from tskd_fast.nn import FusedLinearKDLoss
from tskd_fast.reference.fused_linear_kd import divergence_rows

transformers = pytest.importorskip("transformers")

VOCAB = 64


def tiny_llama(hidden: int, vocab: int, seed: int):
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=32,
        tie_word_embeddings=False,
    )
    return transformers.LlamaForCausalLM(config).float()


def logits_loss(student_logits, teacher_logits, labels, divergence, temperature):
    """The KD loss on full logits, written out: shifted positions, ignored labels left out."""
    s = student_logits[:, :-1].reshape(-1, VOCAB).float() / temperature
    t = teacher_logits[:, :-1, :VOCAB].reshape(-1, VOCAB).float() / temperature
    y = labels[:, 1:].reshape(-1)
    rows = divergence_rows(F.log_softmax(t, dim=1), F.log_softmax(s, dim=1), divergence, 0.5) * temperature**2
    kept = y != -100
    return (rows * kept).sum() / kept.sum()


@pytest.mark.skipif("cpu" not in BACKENDS, reason="the C++ row op is not built")
@pytest.mark.parametrize("divergence", ["forward_kl", "jsd"])
def test_one_distillation_step_between_tiny_llamas(divergence):
    student = tiny_llama(16, VOCAB, seed=1)
    teacher = tiny_llama(32, VOCAB + 8, seed=2).eval()  # a padded teacher vocabulary
    input_ids = torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(3))
    labels = input_ids.clone()
    labels[0, :3] = -100  # a prompt left out of the loss
    loss_fn = FusedLinearKDLoss(
        divergence=divergence, temperature=2.0, vocab_size=VOCAB, shift_labels=True, chunk_size=5
    )

    with torch.no_grad():
        teacher_out = teacher.model(input_ids=input_ids)
        teacher_logits = teacher(input_ids=input_ids).logits
    hidden = student.model(input_ids=input_ids).last_hidden_state
    loss = loss_fn(hidden, student.lm_head, teacher_out.last_hidden_state, teacher.lm_head, labels)
    loss.backward()
    fused_grads = {name: p.grad.clone() for name, p in student.named_parameters()}
    student.zero_grad()

    expected = logits_loss(student(input_ids=input_ids).logits, teacher_logits, labels, divergence, 2.0)
    expected.backward()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    for name, p in student.named_parameters():
        torch.testing.assert_close(
            fused_grads[name], p.grad, rtol=1e-4, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}"
        )
    assert all(p.grad is None for p in teacher.parameters())

    optimizer = torch.optim.SGD(student.parameters(), lr=0.5)
    for name, p in student.named_parameters():
        p.grad = fused_grads[name]
    optimizer.step()
    with torch.no_grad():
        after = loss_fn(
            student.model(input_ids=input_ids).last_hidden_state,
            student.lm_head,
            teacher_out.last_hidden_state,
            teacher.lm_head,
            labels,
        )
    assert after < loss.detach()
