"""One intra-op torch thread for the explain tests, as in a Serve replica or a Ray task (Ray sets
OMP_NUM_THREADS to a task's CPUs): two threads on a busy 2-core machine made shap's passes here ten
times slower. The numbers are the same."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
