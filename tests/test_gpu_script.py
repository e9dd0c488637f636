"""benchmarks/gpu.py outside a GPU: it refuses by name instead of failing on its own code (an H200 run
found ``import torch._dynamo`` inside ``main`` making ``torch`` a local name there)."""
import sys

import pytest
import torch


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without a GPU")
def test_gpu_benchmark_refuses_without_a_gpu(tmp_path, monkeypatch, load_script):
    module = load_script("benchmarks/gpu.py")
    monkeypatch.setattr(sys, "argv", ["gpu.py", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        module.main()
