"""The same numbers on a GPU as on the CPU: every backend, the graph transformer and training.

Skipped where torch sees no GPU (CI has none); run on a GPU machine with ``pytest tests/test_cuda.py``.
"""
import dataclasses

import pytest
import torch

from graphattn import patterns as P
from graphattn.graphs.datasets import neighbors_match
from graphattn.nn import GraphMultiheadAttention, GraphTransformer
from graphattn.text import TrainConfig
from graphattn.text.train import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

PTR = torch.tensor([0, 6, 7, 7, 16, 19, 19 + 300])  # ragged, an empty example, a long one

CASES = [
    ("dense", P.dense(), "dense"), ("dense", P.dense(), "edges"), ("causal", P.causal(), "dense"),
    ("window", P.window(5), "window"), ("window", P.window(5), "edges"),
    ("causal_window", P.causal() & P.window(7), "window"), ("dilated", P.dilated(3, 2), "edges"),
    ("bigbird", P.bigbird(4, 1, 2, seed=0), "edges"), ("block", P.block(8), "edges"),
]


@pytest.fixture(autouse=True)
def exact_matmul():
    # TF32 would round fp32 products to 10 bits of mantissa: compare true fp32 with fp32.
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = old


@pytest.mark.parametrize("name,pattern,backend", CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_attention_backends_match_cpu(name, pattern, backend):
    torch.manual_seed(0)
    layer = GraphMultiheadAttention(32, 4, backend=backend)
    x = torch.randn(int(PTR[-1]), 32, requires_grad=True)
    out = layer(x, pattern=pattern, ptr=PTR)
    out.square().sum().backward()
    gpu_layer = GraphMultiheadAttention(32, 4, backend=backend).cuda()
    gpu_layer.load_state_dict(layer.state_dict())
    x_gpu = x.detach().cuda().requires_grad_()
    out_gpu = gpu_layer(x_gpu, pattern=pattern, ptr=PTR.cuda())
    out_gpu.square().sum().backward()
    torch.testing.assert_close(out_gpu.cpu(), out, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(x_gpu.grad.cpu(), x.grad, rtol=1e-4, atol=1e-4)
    for (n, p), p_gpu in zip(layer.named_parameters(), gpu_layer.parameters()):
        torch.testing.assert_close(p_gpu.grad.cpu(), p.grad, rtol=1e-4, atol=1e-4, msg=n)


@pytest.mark.parametrize("pattern", ["graph", "khop:2", "dense", "gps"])
def test_graph_transformer_matches_cpu(pattern):
    from torch_geometric.loader import DataLoader

    torch.manual_seed(0)
    batch = next(iter(DataLoader(neighbors_match(3, 8, seed=0), batch_size=8)))
    model = GraphTransformer(batch.x.size(1), 32, 8, 2, 4, pattern=pattern, task="node").eval()
    gpu = GraphTransformer(batch.x.size(1), 32, 8, 2, 4, pattern=pattern, task="node").cuda().eval()
    gpu.load_state_dict(model.state_dict())
    torch.testing.assert_close(gpu(batch.cuda()).cpu(), model(batch.cpu()), rtol=1e-4, atol=1e-4)


def test_training_on_cuda_in_fp32_and_bf16(tmp_path):
    config = TrainConfig(train_size=160, valid_size=8, test_size=8, d_model=32, nhead=4, layers=1, ff=64, dropout=0.0,
                         batch_size=32, warmup=20, lr_factor=2.0, steps=6, eval_every=6, max_len=24, progress=False)
    cpu = train(dataclasses.replace(config, out=str(tmp_path / "cpu"), device="cpu"))
    gpu = train(dataclasses.replace(config, out=str(tmp_path / "gpu"), device="cuda"))
    bf16 = train(dataclasses.replace(config, out=str(tmp_path / "bf16"), device="cuda", precision="bf16"))
    assert gpu.losses == pytest.approx(cpu.losses, rel=1e-4)
    assert bf16.losses == pytest.approx(cpu.losses, rel=0.03)
