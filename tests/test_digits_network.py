"""The paper's claims on a whole network: the demo's 7-conv QCFS CNN trained on digits."""
import torch

import groupsnn as gs


def predictions(model, loader, timesteps):
    return torch.cat([gs.simulate(model, x, timesteps).mean(0).argmax(1) for x, _ in loader])


def test_gn_with_tau_equal_levels_at_one_step_is_the_qcfs_ann(digits_ann):
    ann, loader = digits_ann
    snn = gs.convert(ann, neuron="gn", tau=8)
    with torch.no_grad():
        for x, _ in loader:
            # bit-exact: the GN's first step computes floor(x·τ/θ + 1/2) with QCFS's own float ops.
            # Like with like: the unfolded SNN against the ANN as it is, the folded SNN against the ANN
            # folded the same way (folded against unfolded differs in rounding, CPU by CPU)
            assert torch.equal(gs.simulate(snn, x, 1, fold=False)[0], ann(x))
            assert torch.equal(gs.simulate(snn, x, 1)[0], gs.simulate(ann, x, 1)[0])
    assert torch.equal(predictions(snn, loader, 1), predictions(ann, loader, 1))  # both folded


def test_gn_tau4_at_two_steps_is_within_half_a_point_of_the_ann(digits_ann):
    ann, loader = digits_ann
    ann_accuracy = gs.evaluate(ann, loader, [1])[1]
    gn_accuracy = gs.evaluate(gs.convert(ann, neuron="gn", tau=4), loader, [2])[2]
    assert abs(gn_accuracy - ann_accuracy) <= 0.5, (gn_accuracy, ann_accuracy)


def test_if_collapses_at_one_step(digits_ann):
    ann, loader = digits_ann
    ann_accuracy = gs.evaluate(ann, loader, [1])[1]
    if_accuracy = gs.evaluate(gs.convert(ann, neuron="if"), loader, [1, 32])
    assert ann_accuracy >= 95.0
    assert if_accuracy[1] <= ann_accuracy - 20, (if_accuracy, ann_accuracy)
    assert if_accuracy[32] >= ann_accuracy - 2  # ... and recovers given time
