import pytest
import torch


@pytest.fixture(scope="session")
def digits_ann():
    """The demo's QCFS CNN (7 conv layers, L=8) trained once per test session: (ann, test_loader)."""
    from groupsnn.demo import train_demo_ann

    ann, test_loader = train_demo_ann("digits", levels=8, epochs=30, seed=0, progress=False)
    return ann.eval(), test_loader


@pytest.fixture(scope="session")
def digits_relu():
    """The same CNN (with its max-pooling) trained as a plain ReLU network, once per test session:
    (net, calibration_loader over the training split, test_loader)."""
    from groupsnn import data
    from groupsnn.demo import train_demo_ann

    net, test_loader = train_demo_ann("digits", levels=None, epochs=30, seed=0, progress=False)
    calibration_loader = data.make_loader(data.load("digits").train, 128, train=False)
    return net.eval(), calibration_loader, test_loader


@pytest.fixture(scope="session")
def digits_checkpoint(tmp_path_factory):
    """A checkpoint made by ``groupsnn train`` (digits_cnn, QCFS L=8, one epoch): its path."""
    from groupsnn.train import RunConfig, TrainConfig, train

    run = RunConfig(model="digits_cnn", data="digits", optim=TrainConfig(epochs=1))
    return train(run, tmp_path_factory.mktemp("digits_checkpoint"), progress=False)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
