"""Fixtures shared by the test modules."""
import pytest
import torch


@pytest.fixture
def one_thread():
    """One torch thread for the test: on small tensors a second OpenMP thread only waits at
    barriers (7x slower on two busy cores). The caller's count comes back afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
