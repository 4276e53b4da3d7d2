import pytest
import torch

from ._helpers import forget_edm_modules, make_edm_checkout

# One intra-op thread: the suite's tensors are small, and on a busy 2-core machine OpenMP
# spinning with 2 threads makes small convolutions and mixtures up to 100x slower.
torch.set_num_threads(1)


@pytest.fixture
def edm_checkout(tmp_path):
    """``(source_dir, pickle_path, net)``: a fake EDM/EDM2 checkout and a pickled tiny network."""
    yield make_edm_checkout(tmp_path)
    forget_edm_modules()
