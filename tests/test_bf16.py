"""bf16 end to end on CPU: every kernel sums in fp32 where it matters, and the demo model and
GraphTransformer train under ``torch.autocast("cpu", dtype=torch.bfloat16)`` close to fp32.

The kernels are compared on the same bf16-rounded inputs computed in bf16 and in fp32, so the
difference is the kernel's own: rounding the output to bf16 alone costs ~0.17% (relative norm);
scores and softmax summed in bf16 cost 0.7-1.1% at these window widths, which the bound catches.
"""
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.data import Batch, Data

from graphattn import patterns as P
from graphattn.nn import GraphTransformer
from graphattn.ops import dense_attention, edge_attention, flex_attention, window_attention
from graphattn.text.model import Seq2Seq

PTR = torch.tensor([0, 60, 61, 61, 300, 303, 1000])
WINDOW = P.window(48).edge_index(PTR)
DENSE = P.dense().edge_index(PTR)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


KERNELS = {
    "dense": lambda q, k, v: dense_attention(q, k, v, PTR, PTR),
    "dense_weights": lambda q, k, v: dense_attention(q, k, v, PTR, PTR, edge_index=DENSE, need_weights=True),
    "window": lambda q, k, v: window_attention(q, k, v, PTR, PTR, 48, 48, need_weights=True),
    "edges": lambda q, k, v: edge_attention(q, k, v, WINDOW, need_weights=True),
    "flex": lambda q, k, v: flex_attention(q, k, v, PTR, None, P.window(48), edge_index=WINDOW, need_weights=True,
                                           compiled=False),
}


def relative_error(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm())


@pytest.mark.parametrize("name", list(KERNELS))
def test_kernels_keep_bf16_error_at_the_rounding_of_their_output(name):
    g = torch.Generator().manual_seed(0)
    q, k, v = (2 * torch.randn(1000, 4, 16, generator=g).bfloat16() for _ in range(3))
    kernel = KERNELS[name]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        exact, exact_weights = kernel(q.float(), k.float(), v.float())
        out, weights = kernel(q, k, v)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # fp32 inputs, as a model under autocast gives
            autocast_out, _ = kernel(q.float(), k.float(), v.float())
    assert out.dtype == torch.bfloat16
    assert relative_error(out, exact) < 0.004
    assert relative_error(autocast_out, exact) < 0.004
    if exact_weights is not None:
        assert weights.dtype == torch.bfloat16 and relative_error(weights, exact_weights) < 0.004


def train_steps(model, loss_fn, bf16: bool, steps: int = 3) -> list:
    """Losses of ``steps`` Adam steps, the forward and loss under bf16 autocast if asked."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(model)
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


def assert_close_losses(make, loss_fn):
    fp32, bf16 = train_steps(make(), loss_fn, False), train_steps(make(), loss_fn, True)
    assert all(torch.isfinite(torch.tensor(bf16)))
    # bfloat16 keeps 8 bits of mantissa: losses agree to about 1%, not to 1e-6 (and do differ).
    assert bf16 == pytest.approx(fp32, rel=0.03) and bf16 != fp32
    assert fp32[-1] < fp32[0] and bf16[-1] < bf16[0]  # both train


def test_demo_model_trains_under_bf16_autocast():
    # The demo's Seq2Seq (windowed encoder, causal-band decoder), small: flat ragged batches.
    g = torch.Generator().manual_seed(0)
    ptr_src, ptr_tgt = torch.tensor([0, 7, 19, 24, 40]), torch.tensor([0, 9, 20, 30, 41])
    src, tgt = torch.randint(3, 40, (40,), generator=g), torch.randint(3, 40, (41,), generator=g)
    gold = torch.randint(3, 40, (41,), generator=g)

    def make():
        torch.manual_seed(0)
        return Seq2Seq(40, 40, d_model=32, num_heads=4, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=64,
                       dropout=0.0, encoder_pattern=P.window(4), decoder_pattern=P.causal() & P.window(4))

    def loss_fn(model):
        log_probs = model.forward_flat(src, ptr_src, tgt, ptr_tgt)  # [N_t, vocab]
        return F.nll_loss(log_probs.float(), gold, ignore_index=0)

    assert_close_losses(make, loss_fn)


@pytest.mark.parametrize("pattern", ["graph", "dense"])
def test_graph_transformer_trains_under_bf16_autocast(pattern):
    g = torch.Generator().manual_seed(1)
    graphs = []
    for n in (7, 12, 5):
        edge_index = torch.randint(0, n, (2, 3 * n), generator=g)
        graphs.append(Data(x=torch.randn(n, 5, generator=g), edge_index=edge_index,
                           edge_attr=torch.randn(3 * n, 3, generator=g), y=torch.randn(n, 2, generator=g)))
    batch = Batch.from_data_list(graphs)

    def make():
        torch.manual_seed(0)
        return GraphTransformer(5, 32, 2, num_layers=2, num_heads=4, edge_dim=3, pattern=pattern, task="node")

    def loss_fn(model):
        return F.mse_loss(model(batch).float(), batch.y)

    assert_close_losses(make, loss_fn)
