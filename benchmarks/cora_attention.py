"""Where graphattn's attention loses points on Cora: GraphMultiheadAttention inside GAT's own
architecture and recipe, beside PyG's GATConv in the same run.

Usage: python benchmarks/cora_attention.py [--data ../shared/data] [--seeds 5]

GAT (Velickovic et al. 2018) on Cora: dropout 0.6 on the inputs, a projection to 8 heads of 8,
additive attention (dropout 0.6 on its weights), ELU, dropout 0.6, a second layer; Adam at lr 0.005
with an L2 penalty of 5e-4, 200 full-batch steps here (``fit_full_graph``, the test accuracy at the best
validation step), public split, row-normalised features. The rows swap GATConv for
graphattn's dot-product attention on the graph with self loops, keeping everything else:

* ``gatconv``: PyG's GATConv, as in benchmarks/real_graphs.py (the reference);
* ``projected``: :class:`GraphMultiheadAttention` as it comes (``W_q, W_k, W_v, W_o``);
* ``uniform``: the same with ``W_q, W_k`` fixed at zero, so every neighbour weighs the same
  (do the learned scores cost the points?);
* ``unprojected``: ``project_values=False`` (no ``W_v, W_o``; do the projections cost them?).

docs/real_graphs.md reports the result. One thread.
"""
from __future__ import annotations

import argparse
import logging
import statistics

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.transforms import NormalizeFeatures
from torch_geometric.utils import add_self_loops

from graphattn.graphs import public_data
from graphattn.graphs.fit import accuracy, fit_full_graph
from graphattn.nn import GraphMultiheadAttention

VARIANTS = ("gatconv", "projected", "uniform", "unprojected")


class AttentionGAT(nn.Module):
    """GAT's two-layer architecture with graphattn's attention: input dropout, ``Linear(F, 64)``,
    two attention layers of 8 heads (each followed by ELU and dropout), ``Linear(64, C)``."""

    def __init__(self, in_channels: int, out_channels: int, variant: str, hidden: int = 64, p: float = 0.6):
        super().__init__()
        self.p = p
        self.encoder = nn.Linear(in_channels, hidden)
        self.attn = nn.ModuleList(GraphMultiheadAttention(hidden, 8, dropout=p, project_values=variant != "unprojected")
                                  for _ in range(2))
        self.head = nn.Linear(hidden, out_channels)
        if variant == "uniform":  # scores identically zero: a plain mean over the neighbours and self
            for attn in self.attn:
                with torch.no_grad():
                    attn.in_proj_weight[:2 * hidden].zero_()
                    attn.in_proj_bias[:2 * hidden].zero_()
                keep = torch.ones_like(attn.in_proj_weight)
                keep[:2 * hidden] = 0
                attn.in_proj_weight.register_hook(lambda grad, keep=keep: grad * keep)
                attn.in_proj_bias.register_hook(lambda grad, keep=keep[:, 0]: grad * keep)

    def forward(self, data):
        edge_index = add_self_loops(data.edge_index, num_nodes=data.num_nodes)[0]
        h = self.encoder(F.dropout(data.x, self.p, self.training))
        for attn in self.attn:
            h = F.dropout(F.elu(attn(h, edge_index)), self.p, self.training)
        return self.head(h)


def run(variant: str, data, seeds: int) -> list[float]:
    from real_graphs import PlanetoidNet  # the GAT row of docs/real_graphs.md, unchanged

    out = int(data.y.max()) + 1
    tests = []
    for seed in range(seeds):
        torch.manual_seed(seed)
        model = PlanetoidNet(data.num_features, out, "gat") if variant == "gatconv" else \
            AttentionGAT(data.num_features, out, variant)
        result = fit_full_graph(model, data, 0, accuracy, steps=200, lr=0.005, weight_decay=5e-4, optimizer="adam")
        tests.append(100 * result["test"])
        logging.info("%s seed %d: test %.2f (best validation step %d)", variant, seed, tests[-1], result["step"])
    return tests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None, help="data folder (default: $GRAPHATTN_DATA, else ../shared/data)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--variants", nargs="*", default=VARIANTS, choices=VARIANTS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    try:
        data = NormalizeFeatures()(public_data.cora(args.data))
    except FileNotFoundError as error:
        raise SystemExit(str(error))
    print("| attention in GAT's architecture and recipe | Cora test accuracy % (mean ± std) | seeds |")
    print("|---|---|---|")
    for variant in args.variants:
        tests = run(variant, data, args.seeds)
        std = statistics.stdev(tests) if len(tests) > 1 else 0.0
        print(f"| {variant} | {statistics.mean(tests):.2f} ± {std:.2f} | {len(tests)} |", flush=True)


if __name__ == "__main__":
    main()
