"""Fixtures shared by the test modules."""
import importlib.util
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def load_script():
    """A script of the repository (``benchmarks/``, ``examples/``: not a package) as a module:
    ``load_script("benchmarks/gpu.py")``."""
    def load(relative: str):
        path = ROOT / relative
        spec = importlib.util.spec_from_file_location(f"{path.stem}_script", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load


@pytest.fixture
def one_thread():
    """One torch thread for the test: on small tensors a second OpenMP thread only waits at
    barriers (7x slower on two busy cores). The caller's count comes back afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
