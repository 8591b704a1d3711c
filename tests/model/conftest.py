"""Model tests run single-threaded: their tensors are tiny, and two threads on a shared 2-core machine spend
most of their time waiting for each other (measured: ~40x slower per training step)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
