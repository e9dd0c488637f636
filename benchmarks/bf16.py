"""How much each attention kernel loses in bf16: relative error against fp32 on the same bf16 inputs.

Usage: python benchmarks/bf16.py [--n 1800] [--window 64] [--threads 1]

The inputs (8 heads would change nothing; 4 heads of 16 channels, scaled by 2 for a sharp softmax) are
rounded to bf16 once; each kernel then runs on them in bf16 and in fp32, and the table gives
``||out_bf16 - out_fp32|| / ||out_fp32||``. Rounding the output alone to bf16 costs about 0.17%: a kernel
near that sums in fp32 inside. Two rows show what summing scores and softmax in bf16 costs: the window
kernel's operator called directly in bf16 (what ``window_attention`` ran before it moved bf16 work to
fp32) and the dense backend's weights path written in bf16 (likewise). CPU, a few seconds.
"""
from __future__ import annotations

import argparse
import warnings

import torch

from graphattn import patterns as P
from graphattn.ops import dense_attention, edge_attention, flex_attention, window_attention
from graphattn.ops.window import window_forward
from graphattn.utils.tables import markdown_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1800, help="tokens, in examples of 60, 1, 0, 239, 3 and the rest")
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
    n, w = args.n, args.window
    ptr = torch.tensor([0, 60, 61, 61, 300, 303, n])
    g = torch.Generator().manual_seed(0)
    q, k, v = (2 * torch.randn(n, 4, 16, generator=g).bfloat16() for _ in range(3))
    window_edges, dense_edges = P.window(w).edge_index(ptr), P.dense().edge_index(ptr)
    zero = torch.zeros((), dtype=torch.long)

    def dense_weights_in_bf16(q, k, v):
        # The padded weights path as it was: scores, softmax and weighted sum in the input dtype.
        mask = P.dense().to_dense(ptr)
        scores = torch.einsum("ihd,jhd->hij", q, k) * 0.25
        weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), -1)
        return torch.einsum("hij,jhd->ihd", weights, v), None

    kernels = {
        "dense (SDPA)": lambda q, k, v: dense_attention(q, k, v, ptr, ptr),
        "dense, weights path": lambda q, k, v: dense_attention(q, k, v, ptr, ptr, edge_index=dense_edges,
                                                               need_weights=True),
        "dense, weights path summed in bf16 (before)": dense_weights_in_bf16,
        "window": lambda q, k, v: window_attention(q, k, v, ptr, ptr, w, w),
        "window operator summed in bf16 (before)": lambda q, k, v: window_forward(
            q, k, v, None, ptr, ptr, w, w, 0.25, 0.0, zero, 64, False, 0),
        "edges": lambda q, k, v: edge_attention(q, k, v, window_edges),
        "flex (reference path)": lambda q, k, v: flex_attention(q, k, v, ptr, None, P.window(w), compiled=False),
    }
    rows = []
    for name, kernel in kernels.items():
        with torch.no_grad():
            exact = kernel(q.float(), k.float(), v.float())[0]
            out = kernel(q, k, v)[0]
        error = float((out.float() - exact).norm() / exact.norm())
        rows.append({"kernel": name, "out dtype": str(out.dtype).replace("torch.", ""), "relative error %": 100 * error})
    print(f"n={n}, window={w}, 4 heads x 16, threads={args.threads}, torch {torch.__version__}")
    print(markdown_table(rows, ["kernel", "out dtype", "relative error %"]))


if __name__ == "__main__":
    main()
