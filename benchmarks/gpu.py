"""graphattn on a GPU against what a user would otherwise call there, in one run: time and peak CUDA memory
of forward and forward + backward, with ratios to the baseline measured in the same process.

Usage: python benchmarks/gpu.py [--out docs/gpu] [--budget-s 300] [--repeats 3] [--sections window,ragged,graph,bigbird,demo]
       python benchmarks/gpu.py --smoke   # a dry run of the script on the CPU at toy sizes, forward only

Sections (issue 17; bf16 unless said, 8 heads of 64 channels, one sequence unless said):

* ``window``: window(256) at n = 4k, 16k, 64k: the flex backend (BlockMask built in the call, as the layer
  runs it, and built once and reused) against hand-written FlexAttention with ``create_block_mask`` of
  ``|q - k| <= 256`` (the cost of going through patterns), SDPA with a boolean band mask, and the blocked
  window backend (to 16k);
* ``bigbird``: bigbird(64, 2, 3) at n = 16k: flex against the edges backend and SDPA with the dense mask;
* ``ragged``: 64 sequences of 128-2048 tokens (seeded), dense and causal: the dense backend (nested, no
  padding) against nested-tensor SDPA by hand and padded SDPA (fp32 and bf16);
* ``graph``: one layer on E = 1M and 10M random edges (N = E / 10, 64 channels, 4 heads, fp32) against
  PyG's ``TransformerConv(64, 16, heads=4, root_weight=False)``;
* ``demo``: training throughput (tokens/s) of the demo model (``examples/translate_numbers.py``'s
  configuration) in fp32 and bf16, against the same model on ``torch.nn.Transformer`` layers.

Each measurement: one warm-up call (which compiles what needs compiling), then the median of ``--repeats``
calls timed with CUDA events, the forward as training runs it (recording autograd); peak memory is ``torch.cuda.max_memory_allocated`` above what was allocated
before the call. Rows are written to ``OUT/gpu.json`` and ``OUT/gpu.md`` as they come, so a run cut short
keeps what it measured; a section that would start after ``--budget-s`` is skipped and says so, and an
error (out of memory, a compile failure) becomes a row with the error instead of ending the run.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import statistics
import tempfile
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

SECTIONS = ("window", "ragged", "graph", "bigbird", "demo")  # the targets first
DEVICE = "cuda"  # "cpu" only for --smoke, a dry run of this script at toy sizes, forward only
SMOKE = False
COLUMNS = ["section", "case", "impl", "dtype", "fwd_ms", "fwd_bwd_ms", "peak_mib", "speedup", "vs"]


class Report:
    """Rows as they come, rewritten to JSON and markdown after each one."""

    def __init__(self, out: Path, header: dict):
        self.out, self.header, self.rows = out, header, []
        out.mkdir(parents=True, exist_ok=True)

    def add(self, **row) -> None:
        self.rows.append(row)
        print(" | ".join(f"{k}={_cell(row.get(k))}" for k in COLUMNS + ["note"] if row.get(k) is not None), flush=True)
        self.write()

    def write(self) -> None:
        (self.out / "gpu.json").write_text(json.dumps({"header": self.header, "rows": self.rows}, indent=1))
        lines = [f"# graphattn on {self.header['gpu']}", ""]
        lines += [f"- {k}: {v}" for k, v in self.header.items() if k != "gpu"]
        lines += ["", "speedup = time of `vs` / time of this row (forward + backward where measured, else forward);"
                  " > 1 is faster.", ""]
        cols = COLUMNS + ["note"]
        lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(_cell(r.get(c)).replace("|", "\\|") for c in cols) + " |" for r in self.rows]
        (self.out / "gpu.md").write_text("\n".join(lines) + "\n")


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.3g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)


def cuda_ms(fn, repeats: int) -> float:
    """Median milliseconds of ``fn`` over ``repeats`` calls, timed with CUDA events (after one warm-up)."""
    fn()
    times = []
    for _ in range(repeats):
        if DEVICE == "cpu":  # --smoke
            begin = time.perf_counter()
            fn()
            times.append(1e3 * (time.perf_counter() - begin))
            continue
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def peak_mib(fn) -> float:
    if DEVICE == "cpu":  # --smoke
        fn()
        return math.nan
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def measure(forward, inputs, repeats: int, backward: bool = True) -> dict:
    """Forward time, forward + backward time and peak memory of ``forward()`` -> Tensor."""
    grad = {}

    def step():
        out = forward()
        if "out" not in grad:
            grad["out"] = torch.randn_like(out)
        torch.autograd.backward(out, grad["out"])
        for x in inputs:
            x.grad = None

    if not backward:
        with torch.no_grad():
            fwd = cuda_ms(forward, repeats)
            return {"fwd_ms": fwd, "peak_mib": peak_mib(forward)}
    # The forward as training runs it (autograd recording): the graph the backward needs, compiled once.
    fwd = cuda_ms(forward, repeats)
    return {"fwd_ms": fwd, "fwd_bwd_ms": cuda_ms(step, repeats), "peak_mib": peak_mib(step)}


def run_case(report: Report, section: str, case: str, impls: dict, baseline: str, repeats: int, dtype,
             backward: bool = True) -> None:
    """Measure each ``impls[name]() -> (forward, inputs)`` and report speedups against ``baseline``."""
    backward = backward and not SMOKE  # FlexAttention has no CPU backward
    results = {}
    for name, make in impls.items():
        try:
            forward, inputs = make()
            results[name] = measure(forward, inputs, repeats, backward)
        except Exception as error:  # one failure (out of memory, a compile error) must not end the run
            results[name] = {"error": f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"}
            traceback.print_exc()
        finally:
            forward = inputs = None
            torch.cuda.empty_cache()
    key = "fwd_bwd_ms" if backward else "fwd_ms"
    base = results.get(baseline, {}).get(key)
    for name, result in results.items():
        speedup = base / result[key] if base and result.get(key) else None
        report.add(section=section, case=case, impl=name, dtype=str(dtype).replace("torch.", ""),
                   fwd_ms=result.get("fwd_ms"), fwd_bwd_ms=result.get("fwd_bwd_ms"), peak_mib=result.get("peak_mib"),
                   speedup=speedup, vs=baseline if name != baseline else None, note=result.get("error"))


# ---------------------------------------------------------------------------------------- sections


def qkv(n: int, heads: int, dim: int, dtype, seed: int = 0):
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    # --smoke: no gradients (FlexAttention refuses CPU inputs that require them).
    return [torch.randn(n, heads, dim, device=DEVICE, dtype=dtype, generator=g).requires_grad_(not SMOKE)
            for _ in range(3)]


def packed(x):
    """``[N, H, D]`` as FlexAttention's and SDPA's ``[1, H, N, D]`` (a view)."""
    return x.transpose(0, 1).unsqueeze(0)


def flex_impls(pattern, n: int, dtype, hand_mask_mod=None, heads: int = 8, dim: int = 64) -> dict:
    from torch.nn.attention.flex_attention import create_block_mask
    from torch.nn.attention.flex_attention import flex_attention as torch_flex

    from graphattn.ops import flex_attention, pattern_block_mask

    ptr = torch.tensor([0, n], device=DEVICE)
    impls = {}

    def per_call():
        q, k, v = qkv(n, heads, dim, dtype)
        return (lambda: flex_attention(q, k, v, ptr, None, pattern)[0]), (q, k, v)

    def reused():
        q, k, v = qkv(n, heads, dim, dtype)
        mask = pattern_block_mask(pattern, ptr)
        return (lambda: flex_attention(q, k, v, ptr, None, pattern, block_mask=mask)[0]), (q, k, v)

    impls["graphattn flex"] = per_call
    impls["graphattn flex, BlockMask reused"] = reused
    if hand_mask_mod is not None:
        compiled, compiled_mask = torch.compile(torch_flex), torch.compile(create_block_mask)

        def hand():
            q, k, v = qkv(n, heads, dim, dtype)
            q4, k4, v4 = (packed(x).detach().contiguous().requires_grad_(not SMOKE) for x in (q, k, v))
            mask = compiled_mask(hand_mask_mod, 1, 1, n, n, device=DEVICE)  # never [n, n] in memory
            return (lambda: compiled(q4, k4, v4, block_mask=mask)), (q4, k4, v4)

        impls["hand-written FlexAttention"] = hand
    return impls


def sdpa_mask_impl(pattern, n: int, dtype, heads: int = 8, dim: int = 64):
    def make():
        q, k, v = qkv(n, heads, dim, dtype)
        mask = pattern.to_dense(torch.tensor([0, n], device=DEVICE))  # [n, n], True = may attend
        return (lambda: F.scaled_dot_product_attention(packed(q), packed(k), packed(v), attn_mask=mask)), (q, k, v)

    return make


def section_window(report: Report, args) -> None:
    from graphattn import patterns as P
    from graphattn.ops import window_attention

    w = 16 if SMOKE else 256
    for n in (256, 512) if SMOKE else (4096, 16384, 65536):
        impls = flex_impls(P.window(w), n, torch.bfloat16, lambda b, h, q, kv: (q - kv).abs() <= w)
        impls["SDPA + band mask"] = sdpa_mask_impl(P.window(w), n, torch.bfloat16)
        if n <= 16384 and not SMOKE:
            def blocked(n=n):
                q, k, v = qkv(n, 8, 64, torch.bfloat16)
                ptr = torch.tensor([0, n], device=DEVICE)
                return (lambda: window_attention(q, k, v, ptr, ptr, w, w)[0]), (q, k, v)

            impls["graphattn window (blocked)"] = blocked
        run_case(report, "window", f"window({w}), n={n}", impls, "SDPA + band mask", args.repeats, torch.bfloat16)


def section_bigbird(report: Report, args) -> None:
    from graphattn import patterns as P
    from graphattn.ops import CSRLayout, edge_attention

    n, pattern = (512, P.bigbird(8, 2, 3, seed=0)) if SMOKE else (16384, P.bigbird(64, 2, 3, seed=0))
    impls = flex_impls(pattern, n, torch.bfloat16)

    def edges():
        q, k, v = qkv(n, 8, 64, torch.bfloat16)
        edge_index = pattern.edge_index(torch.tensor([0, n], device=DEVICE))
        layout = CSRLayout.build(edge_index, n, n)
        return (lambda: edge_attention(q, k, v, edge_index, layout=layout)[0]), (q, k, v)

    impls["graphattn edges"] = edges
    impls["SDPA + dense mask"] = sdpa_mask_impl(pattern, n, torch.bfloat16)
    run_case(report, "bigbird", f"{pattern!r}, n={n}", impls, "SDPA + dense mask", args.repeats, torch.bfloat16)


def section_ragged(report: Report, args) -> None:
    from graphattn.ops import dense_attention

    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(16, 65, (4,), generator=g) if SMOKE else torch.randint(128, 2049, (64,), generator=g)
    size = lengths.numel()
    ptr = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)]).to(DEVICE)
    n, longest, shortest = int(lengths.sum()), int(lengths.max()), int(lengths.min())
    for dtype in (torch.bfloat16, torch.float32):
        for causal in (False, True):
            def ours(varlen):
                def make():
                    q, k, v = qkv(n, 8, 64, dtype)
                    return (lambda: dense_attention(q, k, v, ptr, ptr, causal=causal, varlen=varlen)[0]), (q, k, v)
                return make

            def nested():
                q, k, v = qkv(n, 8, 64, dtype)

                def forward():
                    parts = [torch.nested.nested_tensor_from_jagged(x, ptr, min_seqlen=shortest, max_seqlen=longest)
                             .transpose(1, 2) for x in (q, k, v)]
                    return F.scaled_dot_product_attention(*parts, is_causal=causal).transpose(1, 2).values()
                return forward, (q, k, v)

            def padded():
                # What a user with a padded [B, L] batch runs: SDPA with a key padding mask.
                g_ = torch.Generator(device=DEVICE).manual_seed(0)
                q, k, v = (torch.randn(size, 8, longest, 64, device=DEVICE, dtype=dtype, generator=g_).requires_grad_()
                           for _ in range(3))
                valid = torch.arange(longest, device=DEVICE) < lengths.to(DEVICE).view(-1, 1)  # [B, L]
                mask = None if causal else valid.view(size, 1, 1, longest)
                return (lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)), (q, k, v)

            impls = {"graphattn dense (nested)": ours(None), "graphattn dense (padded)": ours(False),
                     "nested-tensor SDPA": nested, "padded SDPA": padded}
            case = f"{size} x {shortest}-{longest} ({n} tokens){', causal' if causal else ''}"
            run_case(report, "ragged", case, impls, "nested-tensor SDPA", args.repeats, dtype)


def section_graph(report: Report, args) -> None:
    from torch_geometric.nn import TransformerConv

    from graphattn import GraphMultiheadAttention

    for num_edges in (10_000,) if SMOKE else (1_000_000, 10_000_000):
        num_nodes = num_edges // 10

        def make(impl):
            def build():
                g = torch.Generator(device=DEVICE).manual_seed(0)
                x = torch.randn(num_nodes, 64, device=DEVICE, generator=g).requires_grad_()
                edge_index = torch.randint(0, num_nodes, (2, num_edges), device=DEVICE, generator=g)
                if impl == "graphattn edges":
                    layer = GraphMultiheadAttention(64, 4, backend="edges").to(DEVICE)
                else:
                    layer = TransformerConv(64, 16, heads=4, root_weight=False).to(DEVICE)
                return (lambda: layer(x, edge_index)), (x,)
            return build

        impls = {"graphattn edges": make("graphattn edges"), "TransformerConv": make("TransformerConv")}
        run_case(report, "graph", f"E={num_edges:,}, N={num_nodes:,}", impls, "TransformerConv", args.repeats,
                 torch.float32)


def section_demo(report: Report, args) -> None:
    from graphattn.text import TrainConfig
    from graphattn.text.train import train

    steps = 3 if SMOKE else 60
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for reference in (False, True):
            for precision in ("fp32", "bf16"):
                name = ("torch.nn.Transformer" if reference else "graphattn") + f" {precision}"
                config = TrainConfig.from_flat(d_model=128, num_heads=4, layers=3, ff=512, dropout=0.1,
                                               batch_size=128, lr_factor=0.7, warmup=200, steps=steps,
                                               eval_every=steps, valid_size=64, test_size=64, device=DEVICE,
                                               precision=precision, reference_torch=reference,
                                               **({"train_size": 256} if SMOKE else {}),
                                               progress=False, out=f"{tmp}/{name.replace(' ', '_')}")
                try:
                    results[name] = {"tokens_per_s": train(config).tokens_per_s}
                except Exception as error:
                    results[name] = {"error": f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"}
                    traceback.print_exc()
    for name, result in results.items():
        precision = name.split()[-1]
        base = results.get(f"torch.nn.Transformer {precision}", {}).get("tokens_per_s")
        ours = result.get("tokens_per_s")
        report.add(section="demo", case=f"translate_numbers, {steps} steps, tokens/s", impl=name, dtype=precision,
                   fwd_bwd_ms=None, speedup=ours / base if ours and base and not name.startswith("torch") else None,
                   vs=None if name.startswith("torch") else f"torch.nn.Transformer {precision}",
                   note=result.get("error") or f"{ours:,.0f} tokens/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/gpu", help="directory of gpu.json and gpu.md (default: %(default)s)")
    parser.add_argument("--budget-s", type=float, default=300.0, help="no section starts after this many seconds")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated, of " + ", ".join(SECTIONS))
    parser.add_argument("--smoke", action="store_true", help="a dry run of the script on the CPU at toy sizes")
    args = parser.parse_args()
    global DEVICE, SMOKE
    if args.smoke:
        DEVICE, SMOKE = "cpu", True
    elif not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu.py needs a CUDA GPU (torch.cuda.is_available() is False)")
    from torch import _dynamo  # "import torch._dynamo" here would make torch a local name of main

    # Every pattern form and shape below compiles FlexAttention once: more than torch.compile's default
    # of 8 per function, past which it would quietly fall back to the unfused reference implementation.
    _dynamo.config.recompile_limit = 64
    torch.set_num_threads(min(8, torch.get_num_threads()))
    header = {
        "gpu": "CPU (--smoke)" if SMOKE else torch.cuda.get_device_name(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "date": datetime.datetime.now().isoformat(timespec="seconds"), "cpu threads": torch.get_num_threads(),
        "tf32 matmul": torch.backends.cuda.matmul.allow_tf32, "repeats": args.repeats,
        "command": f"python benchmarks/gpu.py --repeats {args.repeats} --sections {args.sections}"
                   + (" --smoke" if SMOKE else ""),
    }
    report = Report(Path(args.out), header)
    start = time.perf_counter()
    for section in args.sections.split(","):
        if section not in SECTIONS:
            raise SystemExit(f"unknown section {section!r}; choose from {', '.join(SECTIONS)}")
        if time.perf_counter() - start > args.budget_s:
            report.add(section=section, note=f"skipped: the {args.budget_s:.0f} s budget was spent")
            continue
        section_start = time.perf_counter()
        with contextlib.suppress(KeyboardInterrupt):
            try:
                globals()[f"section_{section}"](report, args)
            except Exception as error:
                report.add(section=section, note=f"failed: {type(error).__name__}: {str(error).splitlines()[0][:160]}")
                traceback.print_exc()
        print(f"[{section}: {time.perf_counter() - section_start:.0f} s]", flush=True)
    report.header["seconds"] = round(time.perf_counter() - start)
    report.write()


if __name__ == "__main__":
    main()
