"""The same numbers on a GPU as on the CPU: every backend, the graph transformer and training.

Skipped where torch sees no GPU (CI has none); run on a GPU machine with ``pytest tests/test_cuda.py``
(or ``benchmarks/gpu_check.sh``, which also runs ``benchmarks/gpu.py``). The flex backend has no
CPU backward, so its CUDA gradients are compared with the CPU's edges backend, the reference.
"""

import pytest
import torch

from graphattn import patterns as P
from graphattn.graphs.datasets import neighbors_match
from graphattn.nn import GraphMultiheadAttention, GraphTransformer
from graphattn.ops import dense_attention
from graphattn.utils.batch import ptr_to_batch
from graphattn.text import TrainConfig
from graphattn.text.train import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

PTR = torch.tensor([0, 6, 7, 7, 16, 19, 19 + 300])  # ragged, an empty example, a long one

CASES = [
    ("dense", P.dense(), "dense"), ("dense", P.dense(), "edges"), ("causal", P.causal(), "dense"),
    ("window", P.window(5), "window"), ("window", P.window(5), "edges"),
    ("causal_window", P.causal() & P.window(7), "window"), ("dilated", P.dilated(3, 2), "edges"),
    ("bigbird", P.bigbird(4, 1, 2, seed=0), "edges"), ("block", P.block(8), "edges"),
    # FlexAttention: each rule form once (band, runs of keys, dilated, global | random; causal has full tiles).
    ("window", P.window(5), "flex"), ("block", P.block(8), "flex"), ("dilated", P.dilated(3, 2), "flex"),
    ("bigbird", P.bigbird(4, 1, 2, seed=0), "flex"), ("causal", P.causal(), "flex"),
]


@pytest.fixture(autouse=True, scope="module")
def room_for_compiled_patterns():
    # Every pattern form and shape here compiles FlexAttention anew: more than torch.compile's
    # default of 8 entries per function, after which it would fall back to the unfused reference.
    import torch._dynamo

    old = torch._dynamo.config.recompile_limit
    torch._dynamo.config.recompile_limit = 64
    yield
    torch._dynamo.config.recompile_limit = old


@pytest.fixture(autouse=True)
def exact_matmul():
    # TF32 would round fp32 products to 10 bits of mantissa: compare true fp32 with fp32.
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = old


def graph_in(ptr, num_edges=400, seed=0):
    """Random edges inside the examples of ``ptr`` (global numbering)."""
    g = torch.Generator().manual_seed(seed)
    batch = ptr_to_batch(ptr)
    src, dst = torch.randint(0, int(ptr[-1]), (2, 4 * num_edges), generator=g)
    keep = batch[src] == batch[dst]
    return torch.stack([src[keep], dst[keep]])[:, :num_edges]


def compare_layers(backend, pattern, ptr, edge_dim=None, graph=None, cpu_backend=None):
    """A layer's output and gradients on CUDA against the same weights on the CPU."""
    torch.manual_seed(0)
    # head_dim 16: FlexAttention's smallest tile of the head dimension.
    layer = GraphMultiheadAttention(64, 4, edge_dim=edge_dim, backend=cpu_backend or backend)
    x = torch.randn(int(ptr[-1]), 64, requires_grad=True)
    num_pairs = pattern.edge_index(ptr, graph=graph).size(1)
    edge_attr = None if edge_dim is None else torch.randn(num_pairs, edge_dim)
    out = layer(x, graph, edge_attr, pattern=pattern, ptr=ptr)
    out.square().sum().backward()
    gpu_layer = GraphMultiheadAttention(64, 4, edge_dim=edge_dim, backend=backend).cuda()
    gpu_layer.load_state_dict(layer.state_dict())
    x_gpu = x.detach().cuda().requires_grad_()
    out_gpu = gpu_layer(x_gpu, None if graph is None else graph.cuda(), None if edge_attr is None else edge_attr.cuda(),
                        pattern=pattern, ptr=ptr.cuda())
    out_gpu.square().sum().backward()
    torch.testing.assert_close(out_gpu.cpu(), out, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(x_gpu.grad.cpu(), x.grad, rtol=1e-4, atol=1e-4)
    for (n, p), p_gpu in zip(layer.named_parameters(), gpu_layer.parameters()):
        torch.testing.assert_close(p_gpu.grad.cpu(), p.grad, rtol=1e-4, atol=1e-4, msg=n)


@pytest.mark.parametrize("name,pattern,backend", CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_attention_backends_match_cpu(name, pattern, backend):
    # Flex runs with edge features: its score_mod (an offset for runs of keys, the hash table for the
    # rest) and the bias gradients compile into the same kernels as the mask, one compile per case.
    flex = backend == "flex"
    compare_layers(backend, pattern, PTR, edge_dim=3 if flex else None, cpu_backend="edges" if flex else None)


def test_flex_follows_a_graph_through_its_edge_table():
    ptr = torch.tensor([0, 30, 31, 31, 200])
    compare_layers("flex", P.graph(), ptr, edge_dim=2, graph=graph_in(ptr), cpu_backend="edges")


def test_flex_cross_attention_matches_cpu():
    torch.manual_seed(0)
    ptr, key_ptr = torch.tensor([0, 5, 9, 9, 140]), torch.tensor([0, 7, 7, 20, 100])  # example 1: no keys
    edges = GraphMultiheadAttention(64, 4, backend="edges")
    flex = GraphMultiheadAttention(64, 4, backend="flex").cuda()
    flex.load_state_dict(edges.state_dict())
    x_q, x_k = torch.randn(140, 64), torch.randn(100, 64)
    pattern = P.cross(P.window(3))
    out = edges((x_k, x_q), pattern=pattern, ptr=ptr, key_ptr=key_ptr)
    out_gpu = flex((x_k.cuda(), x_q.cuda()), pattern=pattern, ptr=ptr.cuda(), key_ptr=key_ptr.cuda())
    torch.testing.assert_close(out_gpu.cpu(), out, rtol=1e-4, atol=1e-5)


def test_auto_takes_flex_and_varlen_on_cuda():
    layer = GraphMultiheadAttention(64, 4).cuda()
    assert layer.select_backend(P.bigbird(4, 1, 2, seed=0), 300) == ("flex", "")
    assert layer.select_backend(P.window(64), 4096) == ("flex", "")
    assert layer.select_backend(P.causal(), 300)[0] == "dense"
    assert layer.select_backend(P.graph(), 300)[0] == "edges"


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dense_without_padding_equals_padded(causal, dtype):
    # Ragged with empty examples: nested jagged tensors (ptr = cu_seqlens) against padded SDPA.
    torch.manual_seed(0)
    q, k, v = (torch.randn(int(PTR[-1]), 4, 16, device="cuda", dtype=dtype, requires_grad=True) for _ in range(3))
    ptr = PTR.cuda()
    nested, _ = dense_attention(q, k, v, ptr, ptr, causal=causal, varlen=True)  # raises if no fused kernel runs
    padded, _ = dense_attention(q, k, v, ptr, ptr, causal=causal, varlen=False)
    tolerance = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(nested, padded, **tolerance)
    grads = torch.autograd.grad(nested.float().square().sum(), (q, k, v))
    for grad, ref in zip(grads, torch.autograd.grad(padded.float().square().sum(), (q, k, v))):
        torch.testing.assert_close(grad, ref, **tolerance)
    auto, _ = dense_attention(q, k, v, ptr, ptr, causal=causal)
    torch.testing.assert_close(auto, nested, rtol=0, atol=0)  # the automatic choice is the nested path


def test_graph_transformer_trains_in_bf16_on_cuda():
    from torch_geometric.loader import DataLoader

    torch.manual_seed(0)
    batch = next(iter(DataLoader(neighbors_match(3, 8, seed=0), batch_size=8))).cuda()
    losses = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = GraphTransformer(batch.x.size(1), 32, 8, 2, 4, pattern="khop:2", task="node").cuda()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        losses[precision] = []
        for _ in range(3):
            optimizer.zero_grad()
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
                logits = model(batch)[batch.root_mask]  # the task is read at each tree's root
                loss = torch.nn.functional.cross_entropy(logits.float(), batch.y)
            loss.backward()
            optimizer.step()
            losses[precision].append(float(loss.detach()))
    assert all(torch.isfinite(torch.tensor(losses["bf16"])))
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.03)


@pytest.mark.parametrize("options", [{"pattern": "graph"}, {"pattern": "khop:2"}, {"pattern": "dense"},
                                     {"pattern": "dense", "local_mpnn": True}])  # the last: GPS
def test_graph_transformer_matches_cpu(options):
    from torch_geometric.loader import DataLoader

    torch.manual_seed(0)
    batch = next(iter(DataLoader(neighbors_match(3, 8, seed=0), batch_size=8)))
    model = GraphTransformer(batch.x.size(1), 32, 8, 2, 4, task="node", **options).eval()
    gpu = GraphTransformer(batch.x.size(1), 32, 8, 2, 4, task="node", **options).cuda().eval()
    gpu.load_state_dict(model.state_dict())
    torch.testing.assert_close(gpu(batch.cuda()).cpu(), model(batch.cpu()), rtol=1e-4, atol=1e-4)


def test_training_on_cuda_in_fp32_and_bf16(tmp_path):
    config = TrainConfig.from_flat(train_size=160, valid_size=8, test_size=8, d_model=32, num_heads=4, layers=1, ff=64, dropout=0.0,
                                   batch_size=32, warmup=20, lr_factor=2.0, steps=6, eval_every=6, max_len=24, progress=False)
    cpu = train(config.replace(out=str(tmp_path / "cpu"), device="cpu"))
    gpu = train(config.replace(out=str(tmp_path / "gpu"), device="cuda"))
    bf16 = train(config.replace(out=str(tmp_path / "bf16"), device="cuda", precision="bf16"))
    assert gpu.losses == pytest.approx(cpu.losses, rel=1e-4)
    assert bf16.losses == pytest.approx(cpu.losses, rel=0.03)


def test_full_graph_training_and_roc_auc_on_cuda():
    from torch_geometric.data import Data

    from graphattn.graphs.baselines import ResidualGNN
    from graphattn.graphs.fit import fit_full_graph, roc_auc

    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(500, generator=g), torch.randint(0, 2, (500,), generator=g)
    assert roc_auc(pred.cuda(), target.cuda()) == roc_auc(pred, target)
    n = 300
    data = Data(x=torch.randn(n, 8, generator=g), edge_index=torch.randint(0, n, (2, 1200), generator=g),
                y=torch.randint(0, 2, (n,), generator=g))
    data.train_mask, data.val_mask, data.test_mask = (torch.arange(n) % 3 == k for k in range(3))
    runs = {}
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        model = ResidualGNN(8, 32, 1, 2, "gat-sep", dropout=0.0).to(device)
        runs[device] = fit_full_graph(model, data.to(device), metric=roc_auc, steps=5, lr=1e-3)
    assert runs["cuda"]["val"] == pytest.approx(runs["cpu"]["val"], abs=1e-3)
    assert runs["cuda"]["test"] == pytest.approx(runs["cpu"]["test"], abs=1e-3)
