import pytest
import torch


@pytest.fixture(scope="session")
def digits_ann():
    """The demo's QCFS CNN (7 conv layers, L=8) trained once per test session: (ann, test_loader)."""
    from groupsnn.demo import train_demo_ann

    ann, test_loader = train_demo_ann("digits", levels=8, epochs=30, seed=0, progress=False)
    return ann.eval(), test_loader


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
