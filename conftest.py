import os

import torch

# Two pytest-xdist workers on two cores: one intra-op thread each. Two threads per worker
# oversubscribe the cores and OpenMP barriers then make small ops hundreds of times slower.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
