import torch

# One intra-op thread: the suite's tensors are small, and on a busy 2-core machine OpenMP
# spinning with 2 threads makes small convolutions and mixtures up to 100x slower.
torch.set_num_threads(1)
