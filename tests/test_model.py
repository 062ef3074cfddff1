"""The Qwen2-style decoder: packing isolation, exact attention, causality, RoPE, presets, counts."""
import math

import numpy as np
import pytest
import torch

from reasonless.model import (
    PRESETS,
    Model,
    ModelConfig,
    apply_rope,
    attention,
    flops_per_token,
    num_params,
    positions_from_cu_seqlens,
    preset,
    rope_cos_sin,
)

VOCAB = 944


def cu(*lengths):
    return torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)


def tiny_model(seed=0, dtype=torch.float32, **overrides):
    torch.manual_seed(seed)
    return Model(preset("tiny", VOCAB, **overrides)).to(dtype).eval()


def naive_attention(q, k, v, cu_seqlens):
    """Explicit softmax over the whole packed row with a block-diagonal causal mask; GQA by repeat."""
    t, hq, d = q.shape
    group = hq // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    example = torch.repeat_interleave(torch.arange(len(cu_seqlens) - 1), (cu_seqlens[1:] - cu_seqlens[:-1]).long())
    i = torch.arange(t)
    allowed = (example[:, None] == example[None, :]) & (i[None, :] <= i[:, None])
    scores = torch.einsum("ihd,jhd->hij", q, k) / math.sqrt(d)
    scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.einsum("hij,jhd->ihd", scores.softmax(-1), v)


# --------------------------------------------------------------------------------------------------
# attention()


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("hq,hkv", [(4, 2), (4, 4), (6, 1)])
def test_attention_torch_matches_naive_forward_and_backward(dtype, tol, hq, hkv):
    lengths = (1, 5, 17, 64)
    total, d = sum(lengths), 16
    gen = torch.Generator().manual_seed(hq * 10 + hkv)
    q = torch.randn(total, hq, d, generator=gen, dtype=dtype)
    k = torch.randn(total, hkv, d, generator=gen, dtype=dtype)
    v = torch.randn(total, hkv, d, generator=gen, dtype=dtype)
    grad_out = torch.randn(total, hq, d, generator=gen, dtype=dtype)
    cu_seqlens = cu(*lengths)

    results = []
    for fn in (lambda *a: attention(*a, cu_seqlens, max(lengths), backend="torch"),
               lambda *a: naive_attention(*a, cu_seqlens)):
        leaves = [x.clone().requires_grad_() for x in (q, k, v)]
        out = fn(*leaves)
        out.backward(grad_out)
        results.append([out.detach()] + [x.grad for x in leaves])
    for name, got, want in zip(("out", "dq", "dk", "dv"), *results):
        assert got.dtype == dtype
        torch.testing.assert_close(got, want, atol=tol, rtol=tol, msg=f"{name} differs")


def test_attention_single_token_example_attends_only_to_itself():
    q, k = torch.randn(3, 2, 8), torch.randn(3, 1, 8)
    v = torch.randn(3, 1, 8)
    out = attention(q, k, v, cu(1, 2), 2)
    torch.testing.assert_close(out[0], v[0].expand(2, 8))


def test_attention_rejects_bad_inputs():
    q, k = torch.randn(6, 4, 8), torch.randn(6, 2, 8)
    with pytest.raises(ValueError, match="backend"):
        attention(q, k, k, cu(6), 6, backend="cuda-magic")
    with pytest.raises(ValueError, match="int32"):
        attention(q, k, k, cu(6).long(), 6)
    with pytest.raises(ValueError, match="end at total_tokens"):
        attention(q, k, k, cu(2, 3), 3)
    with pytest.raises(ValueError, match="multiple"):
        attention(torch.randn(6, 3, 8), k, k, cu(6), 6)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_triton_backend_without_cuda_is_a_clear_error():
    q, k = torch.randn(6, 4, 8), torch.randn(6, 2, 8)
    with pytest.raises(RuntimeError, match="CUDA"):
        attention(q, k, k, cu(6), 6, backend="triton")


# --------------------------------------------------------------------------------------------------
# The model on packed rows


def test_packed_examples_are_isolated_and_equal_running_alone():
    model = tiny_model()
    gen = torch.Generator().manual_seed(1)
    a = torch.randint(0, VOCAB, (23,), generator=gen)
    b = torch.randint(0, VOCAB, (40,), generator=gen)
    with torch.no_grad():
        packed = model(torch.cat([a, b]), cu(23, 40))
        alone_a = model(a, cu(23))
        alone_b = model(b, cu(40))
        torch.testing.assert_close(packed[:23], alone_a, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(packed[23:], alone_b, atol=1e-5, rtol=1e-5)

        a2 = a.clone()
        a2[5] = (a2[5] + 1) % VOCAB
        perturbed_a = model(torch.cat([a2, b]), cu(23, 40))
        assert torch.equal(perturbed_a[23:], packed[23:])  # B bit-identical
        assert not torch.equal(perturbed_a[5:23], packed[5:23])  # A itself did change

        b2 = b.clone()
        b2[0] = (b2[0] + 1) % VOCAB
        perturbed_b = model(torch.cat([a, b2]), cu(23, 40))
        assert torch.equal(perturbed_b[:23], packed[:23])  # A bit-identical
        assert not torch.equal(perturbed_b[23:], packed[23:])


def test_causality_later_tokens_do_not_change_earlier_logits():
    model = tiny_model()
    gen = torch.Generator().manual_seed(2)
    tokens = torch.randint(0, VOCAB, (50,), generator=gen)
    later = tokens.clone()
    later[30:] = torch.randint(0, VOCAB, (20,), generator=gen)
    with torch.no_grad():
        x, y = model(tokens, cu(50)), model(later, cu(50))
    assert torch.equal(x[:30], y[:30])
    assert not torch.equal(x[30:], y[30:])


def test_positions_restart_per_example_and_explicit_positions_match():
    cu_seqlens = cu(3, 0, 4, 1)
    assert positions_from_cu_seqlens(cu_seqlens, 8).tolist() == [0, 1, 2, 0, 1, 2, 3, 0]
    model = tiny_model()
    tokens = torch.randint(0, VOCAB, (8,), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        default = model(tokens, cu_seqlens)
        explicit = model(tokens, cu_seqlens, positions=positions_from_cu_seqlens(cu_seqlens, 8))
        shifted = model(tokens, cu_seqlens, positions=positions_from_cu_seqlens(cu_seqlens, 8) + 7)
    assert torch.equal(default, explicit)
    # RoPE is relative: shifting every position by the same amount changes only rounding...
    torch.testing.assert_close(shifted, default, atol=1e-4, rtol=1e-4)
    # ...while changing relative positions changes the logits (token 0 sees only itself either way).
    with torch.no_grad():
        scrambled = model(tokens, cu(8), positions=torch.tensor([0, 5, 1, 9, 2, 2, 7, 3]))
        in_order = model(tokens, cu(8))
    assert not torch.allclose(scrambled[1:], in_order[1:], atol=1e-4)


def test_forward_rows_gives_those_tokens_logits_and_their_gradients():
    model = tiny_model(dtype=torch.float64).train()
    tokens = torch.randint(0, VOCAB, (9,), generator=torch.Generator().manual_seed(4))
    rows = torch.tensor([8, 2, 3])
    full = model(tokens, cu(5, 4))
    some = model(tokens, cu(5, 4), rows=rows)
    torch.testing.assert_close(some, full[rows], atol=1e-12, rtol=1e-12)
    grads = []
    for logits in (full[rows], some):
        model.zero_grad()
        logits.square().sum().backward()
        grads.append(model.layers[0].self_attn.q_proj.weight.grad.clone())
    torch.testing.assert_close(grads[1], grads[0], atol=1e-12, rtol=1e-12)


def test_model_rejects_bad_inputs():
    model = tiny_model(max_seq_len=16)
    with pytest.raises(ValueError, match="int64"):
        model(torch.zeros(4, dtype=torch.int32), cu(4))
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.zeros(17, dtype=torch.int64), cu(17))
    with pytest.raises(ValueError, match="end at total_tokens"):
        model(torch.zeros(5, dtype=torch.int64), cu(4))


def test_gradients_flow_and_training_step_reduces_loss():
    model = tiny_model().train()
    gen = torch.Generator().manual_seed(4)
    tokens = torch.randint(0, VOCAB, (40,), generator=gen)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(5):
        logits = model(tokens[:-1], cu(15, 24))
        loss = torch.nn.functional.cross_entropy(logits, tokens[1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(p.grad is not None for p in model.parameters())
    assert losses[-1] < losses[0] - 0.5


def test_same_seed_same_model():
    a, b, c = tiny_model(seed=7), tiny_model(seed=7), tiny_model(seed=8)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["embed_tokens.weight"], sc["embed_tokens.weight"])


def test_tied_embeddings_are_one_parameter():
    model = tiny_model()
    assert model.lm_head_weight is model.embed_tokens.weight
    assert [name for name, p in model.named_parameters() if p.shape[0] == VOCAB] == ["embed_tokens.weight"]
    # Token 7 is absent from the input, so its embedding row gets gradient only through the output head.
    tokens = torch.tensor([1, 2, 3, 4, 5], dtype=torch.int64)
    model(tokens, cu(5))[:, 7].sum().backward()
    assert model.embed_tokens.weight.grad[7].abs().sum() > 0


def test_qwen2_module_names_and_biases():
    names = set(dict(tiny_model().named_parameters()))
    for suffix in ("q_proj.weight", "q_proj.bias", "k_proj.bias", "v_proj.bias", "o_proj.weight"):
        assert f"layers.0.self_attn.{suffix}" in names
    assert "layers.0.self_attn.o_proj.bias" not in names
    assert not any(n.startswith("layers.0.mlp") and n.endswith("bias") for n in names)
    for n in ("layers.3.input_layernorm.weight", "layers.3.post_attention_layernorm.weight",
              "layers.3.mlp.gate_proj.weight", "layers.3.mlp.up_proj.weight", "layers.3.mlp.down_proj.weight",
              "norm.weight", "embed_tokens.weight"):
        assert n in names


# --------------------------------------------------------------------------------------------------
# RoPE


def reference_rope(x, positions, theta):
    """Rotate each pair (i, i + D/2) of each head by position·θ^(-2i/D), one scalar at a time."""
    t, h, d = x.shape
    out = torch.empty_like(x)
    for p in range(t):
        for i in range(d // 2):
            angle = positions[p].item() * theta ** (-2 * i / d)
            c, s = math.cos(angle), math.sin(angle)
            x1, x2 = x[p, :, i], x[p, :, i + d // 2]
            out[p, :, i] = x1 * c - x2 * s
            out[p, :, i + d // 2] = x1 * s + x2 * c
    return out


@pytest.mark.parametrize("theta", [10000.0, 1e6])
def test_rope_matches_reference(theta):
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(9, 3, 8, generator=gen, dtype=torch.float64)
    positions = torch.tensor([0, 1, 2, 5, 100, 1000, 4095, 7, 32767])
    want = reference_rope(x, positions, theta)
    cos, sin = rope_cos_sin(positions, 8, theta, torch.float64)
    torch.testing.assert_close(apply_rope(x, cos, sin), want, atol=1e-9, rtol=1e-9)
    # The model's float32 angles round position·freq to 24 bits: ~1e-4 rad at position 32767.
    cos, sin = rope_cos_sin(positions, 8, theta)
    got = apply_rope(x.float(), cos, sin)
    torch.testing.assert_close(got[:-1], want[:-1].float(), atol=2e-5, rtol=2e-5)
    torch.testing.assert_close(got[-1], want[-1].float(), atol=1e-3, rtol=1e-3)


def test_rope_dot_product_depends_only_on_position_difference():
    gen = torch.Generator().manual_seed(6)
    q, k = torch.randn(1, 1, 32, generator=gen), torch.randn(1, 1, 32, generator=gen)

    def score(pq, pk):
        cq, sq = rope_cos_sin(torch.tensor([pq]), 32, 1e4)
        ck, sk = rope_cos_sin(torch.tensor([pk]), 32, 1e4)
        return (apply_rope(q, cq, sq) * apply_rope(k, ck, sk)).sum().item()

    base = score(10, 3)
    for shift in (1, 17, 500):
        assert score(10 + shift, 3 + shift) == pytest.approx(base, abs=1e-4)
    assert score(10, 4) != pytest.approx(base, abs=1e-3)


# --------------------------------------------------------------------------------------------------
# Presets and counts


def test_unknown_preset_lists_presets():
    with pytest.raises(ValueError, match="tiny, small, paper"):
        preset("huge", VOCAB)


def test_preset_overrides_and_config_validation():
    config = preset("tiny", 100, n_layer=2, rope_theta=5e5)
    assert (config.vocab_size, config.n_layer, config.rope_theta, config.head_dim) == (100, 2, 5e5, 32)
    assert ModelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown keys"):
        ModelConfig.from_dict({**config.to_dict(), "dropout": 0.1})
    with pytest.raises(ValueError, match="multiple of n_kv_head"):
        preset("tiny", 100, n_kv_head=3)
    with pytest.raises(ValueError, match="vocab_size"):
        preset("tiny", 0)


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_num_params_matches_module(name):
    config = preset(name, VOCAB)
    assert num_params(config) == sum(p.numel() for p in Model(config).parameters())


def test_paper_preset_shape_and_size_on_meta_device():
    config = preset("paper", VOCAB)
    assert (config.n_layer, config.d_model, config.n_head, config.n_kv_head, config.d_ff, config.head_dim) == (
        24, 896, 14, 2, 4864, 64)
    assert (config.rope_theta, config.max_seq_len) == (1e6, 32768)
    with torch.device("meta"):
        model = Model(config)
    count = sum(p.numel() for p in model.parameters())
    assert count == num_params(config)
    assert 0.35e9 < count < 0.37e9
    # With Qwen2.5's own vocabulary the count is the published 0.49 B.
    assert 0.48e9 < num_params(preset("paper", 151936)) < 0.50e9


def test_flops_per_token():
    config = preset("small", VOCAB)
    f1, f2 = flops_per_token(config, 1024), flops_per_token(config, 4096)
    assert 0 < f1 < f2
    # Dominated by 6·N for short sequences: between 6·(non-embedding params) and 6·(all params).
    n = num_params(config)
    assert 6 * (n - VOCAB * config.d_model) < flops_per_token(config, 1) < 6 * n + 12 * config.n_layer * 384
    # Attention term grows linearly: 12·L·d per extra token of context.
    assert f2 - f1 == 12 * config.n_layer * config.n_head * config.head_dim * 3072
    with pytest.raises(ValueError):
        flops_per_token(config, 0)


def test_train_flops_count_attention_per_packed_example_not_per_row():
    from reasonless.data import PackedBatch
    from reasonless.model import train_flops
    from reasonless.train import example_lengths

    config = preset("tiny", VOCAB)
    # One row of 16 slots: examples of 5 and 7 tokens, then 4 slots of padding (its own segment, example -1).
    batch = PackedBatch(tokens=torch.zeros(1, 16, dtype=torch.long), targets=torch.zeros(1, 16, dtype=torch.long),
                        positions=torch.zeros(1, 16, dtype=torch.long),
                        cu_seqlens=torch.tensor([0, 5, 12, 16], dtype=torch.int32), max_seqlen=7,
                        segment_example=np.array([3, 8, -1]), n_loss_tokens=10, epoch=0, step=0)
    lengths = example_lengths(batch)
    assert lengths.tolist() == [5, 7]
    d, hd, layers, heads = config.d_model, config.head_dim, config.n_layer, config.n_head
    matmul = layers * (d * heads * hd + 2 * d * config.n_kv_head * hd + heads * hd * d + 3 * d * config.d_ff) \
        + VOCAB * d
    by_hand = 6 * matmul * 12 + 12 * layers * heads * hd * (25 + 49)
    assert train_flops(config, int(lengths.sum()), int((lengths ** 2).sum())) == by_hand
    # the padding (4 slots) and the longest segment (7) stand nowhere in it
    assert by_hand != 6 * matmul * 16 + 12 * layers * heads * hd * 7 * 16


def test_presets_are_tiny_small_paper():
    assert list(PRESETS) == ["tiny", "small", "paper"]
