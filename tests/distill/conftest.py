"""Fixtures of the distillation tests (helpers live in ``distill_helpers``)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 threads on a shared 2-core box can be 10x slower
    yield
    torch.set_num_threads(n)
