"""The graph Transformer against torch.nn.Transformer with the same weights."""
import pytest
import torch
from torch import nn

from graphattn import patterns as P
from graphattn.utils import to_flat
from graphattn.nn import (
    Transformer,
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
)


def padding_mask(lengths, max_len):
    return torch.arange(max_len) >= torch.tensor(lengths).unsqueeze(1)  # True = padding


CONFIGS = [
    dict(d_model=32, nhead=4, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=64, activation="relu", norm_first=False),
    dict(d_model=32, nhead=4, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=64, activation="gelu", norm_first=True),
    dict(d_model=24, nhead=3, num_encoder_layers=1, num_decoder_layers=3, dim_feedforward=40, activation="gelu", norm_first=False),
    dict(d_model=16, nhead=1, num_encoder_layers=3, num_decoder_layers=1, dim_feedforward=16, activation="relu", norm_first=True),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"d{c['d_model']}h{c['nhead']}{'pre' if c['norm_first'] else 'post'}{c['activation']}")
@pytest.mark.parametrize("backend", ["auto", "edges"])
def test_equals_torch_transformer(config, backend):
    torch.manual_seed(0)
    ref = nn.Transformer(**config, dropout=0.1, batch_first=True).eval()
    model = Transformer.from_torch(ref, attn_kwargs={"backend": backend}).eval()
    src_len, tgt_len = [7, 2, 5, 1], [4, 6, 1, 3]
    src = torch.randn(4, 7, config["d_model"])
    tgt = torch.randn(4, 6, config["d_model"])
    src_pad, tgt_pad = padding_mask(src_len, 7), padding_mask(tgt_len, 6)
    causal = nn.Transformer.generate_square_subsequent_mask(6, dtype=torch.bool)  # True = blocked
    expected = ref(src, tgt, tgt_mask=causal, src_key_padding_mask=src_pad,
                   tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=src_pad)
    out = model(src, tgt, src_pad, tgt_pad, src_pad)
    torch.testing.assert_close(out[~tgt_pad], expected[~tgt_pad], atol=1e-5, rtol=1e-5)
    assert torch.equal(out[tgt_pad], torch.zeros_like(out[tgt_pad]))
    # The flat entry point gives the same numbers without padding.
    x_src, ptr_src = to_flat(src, key_padding_mask=src_pad)
    x_tgt, ptr_tgt = to_flat(tgt, key_padding_mask=tgt_pad)
    torch.testing.assert_close(model.forward_flat(x_src, ptr_src, x_tgt, ptr_tgt), out[~tgt_pad])


def test_left_padding_and_extra_memory_mask():
    torch.manual_seed(1)
    ref = nn.Transformer(16, 2, 1, 1, 32, batch_first=True).eval()
    model = Transformer.from_torch(ref).eval()
    src, tgt = torch.randn(2, 5, 16), torch.randn(2, 4, 16)
    src_pad = torch.tensor([[True, True, False, False, False], [False] * 5])  # left padding
    memory_pad = src_pad.clone()
    memory_pad[1, 4] = True  # the decoder may hide more source positions
    causal = nn.Transformer.generate_square_subsequent_mask(4, dtype=torch.bool)
    memory = ref.encoder(src, src_key_padding_mask=src_pad)
    expected = ref.decoder(tgt, memory, tgt_mask=causal, memory_key_padding_mask=memory_pad)
    out = model(src, tgt, src_key_padding_mask=src_pad, memory_key_padding_mask=memory_pad)
    # Rows of padded sources differ in torch (they attend), so compare through the memory of real rows.
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_and_decoder_alone(norm_first):
    torch.manual_seed(2)
    enc_ref = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 4, 32, batch_first=True, norm_first=norm_first), 2, enable_nested_tensor=False).eval()
    dec_ref = nn.TransformerDecoder(nn.TransformerDecoderLayer(16, 4, 32, batch_first=True, norm_first=norm_first), 2).eval()
    if norm_first:  # the stacks' own from_torch, with a final norm
        enc_ref.norm, dec_ref.norm = nn.LayerNorm(16).eval(), nn.LayerNorm(16).eval()
        nn.init.normal_(enc_ref.norm.weight), nn.init.normal_(dec_ref.norm.bias)
        enc, dec = TransformerEncoder.from_torch(enc_ref).eval(), TransformerDecoder.from_torch(dec_ref).eval()
    else:
        enc = TransformerEncoder(TransformerEncoderLayer.from_torch(enc_ref.layers[0]), 2).eval()
        enc.load_state_dict(enc_ref.state_dict())
        dec = TransformerDecoder(TransformerDecoderLayer.from_torch(dec_ref.layers[0]), 2).eval()
        dec.load_state_dict(dec_ref.state_dict())
    src, tgt = torch.randn(3, 6, 16), torch.randn(3, 5, 16)
    src_pad, tgt_pad = padding_mask([6, 3, 1], 6), padding_mask([5, 2, 4], 5)
    memory_ref = enc_ref(src, src_key_padding_mask=src_pad)
    x_src, ptr_src = to_flat(src, key_padding_mask=src_pad)
    memory = enc(x_src, ptr_src)
    torch.testing.assert_close(memory, memory_ref[~src_pad], atol=1e-5, rtol=1e-5)
    causal = nn.Transformer.generate_square_subsequent_mask(5, dtype=torch.bool)
    out_ref = dec_ref(tgt, memory_ref, tgt_mask=causal, tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=src_pad)
    x_tgt, ptr_tgt = to_flat(tgt, key_padding_mask=tgt_pad)
    out = dec(x_tgt, memory, ptr_tgt, ptr_src)
    torch.testing.assert_close(out, out_ref[~tgt_pad], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["auto", "edges", "window"])
def test_window_encoder_equals_masked_dense_reference(backend):
    torch.manual_seed(3)
    w, n = 2, 9
    layer_ref = nn.TransformerEncoderLayer(16, 4, 32, batch_first=True)
    ref = nn.TransformerEncoder(layer_ref, 2, enable_nested_tensor=False).eval()
    layer = TransformerEncoderLayer.from_torch(layer_ref, pattern=P.window(w), attn_kwargs={"backend": backend})
    enc = TransformerEncoder(layer, 2).eval()
    enc.load_state_dict(ref.state_dict())
    lengths = [9, 4, 6]
    x = torch.randn(3, n, 16)
    pad = padding_mask(lengths, n)
    idx = torch.arange(n)
    band_blocked = (idx.view(-1, 1) - idx.view(1, -1)).abs() > w  # True = blocked
    expected = ref(x, mask=band_blocked, src_key_padding_mask=pad)
    x_flat, ptr = to_flat(x, key_padding_mask=pad)
    torch.testing.assert_close(enc(x_flat, ptr), expected[~pad], atol=1e-5, rtol=1e-5)


def test_causal_window_decoder_equals_masked_reference():
    torch.manual_seed(4)
    w = 2
    dec_layer = nn.TransformerDecoderLayer(16, 2, 32, batch_first=True)
    ref = nn.TransformerDecoder(dec_layer, 1).eval()
    layer = TransformerDecoderLayer.from_torch(dec_layer, pattern=P.causal() & P.window(w))
    dec = TransformerDecoder(layer, 1).eval()
    dec.load_state_dict(ref.state_dict())
    tgt, memory = torch.randn(2, 8, 16), torch.randn(2, 5, 16)
    idx = torch.arange(8)
    diff = idx.view(-1, 1) - idx.view(1, -1)
    blocked = (diff < 0) | (diff > w)
    expected = ref(tgt, memory, tgt_mask=blocked)
    out = dec(tgt.reshape(-1, 16), memory.reshape(-1, 16), torch.tensor([0, 8, 16]), torch.tensor([0, 5, 10]))
    torch.testing.assert_close(out, expected.reshape(-1, 16), atol=1e-5, rtol=1e-5)


def test_gradients_reach_every_parameter():
    torch.manual_seed(5)
    model = Transformer(16, 2, 2, 2, 32, dropout=0.1, encoder_pattern=P.window(2), decoder_pattern=P.causal() & P.window(2))
    src, tgt = torch.randn(2, 7, 16), torch.randn(2, 5, 16)
    out = model(src, tgt, padding_mask([7, 3], 7), padding_mask([5, 2], 5))
    out.square().sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_bad_input():
    model = Transformer(16, 2, 1, 1, 32)
    src, tgt = torch.randn(2, 5, 16), torch.randn(3, 4, 16)
    with pytest.raises(ValueError, match="batch size"):
        model(src, tgt)
    with pytest.raises(ValueError, match="divisible"):
        Transformer(10, 3)
    with pytest.raises(ValueError, match="src"):
        model(torch.randn(2, 5, 8), torch.randn(2, 4, 16))
    with pytest.raises(ValueError, match="key_padding_mask"):
        model(src, tgt[:2], src_key_padding_mask=torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="key_padding_mask"):
        model(src, tgt[:2], src_key_padding_mask=torch.zeros(2, 5))
    with pytest.raises(ValueError, match="memory_key_padding_mask"):
        model(src, tgt[:2], memory_key_padding_mask=torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="encoder_pattern: pattern 'window' takes 1"):
        Transformer(16, 2, 1, 1, encoder_pattern="window")
    with pytest.raises(TypeError, match="encoder_pattern must be a graphattn Pattern"):
        Transformer(16, 2, 1, 1, encoder_pattern=16)
    with pytest.raises(ValueError, match="activation"):
        Transformer(16, 2, 1, 1, activation="swish")
    with pytest.raises(TypeError, match="nn.Transformer"):
        Transformer.from_torch(nn.Linear(2, 2))


def test_repr():
    layer = TransformerEncoderLayer(16, 2, pattern=P.window(4))
    assert repr(layer) == "TransformerEncoderLayer(16, nhead=2, pattern=window:4, norm_first=False)"
