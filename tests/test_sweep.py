import csv
import json

import pytest
import torch
import torch.nn as nn

import groupsnn as gs
from groupsnn.cli import main
from groupsnn.plots import plot_accuracy_vs_timesteps, plot_effect_of_tau, plot_firing_rates
from groupsnn.sweep import sweep

PNG = b"\x89PNG\r\n\x1a\n"


def small_ann():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 8),
                        nn.ReLU(), nn.Linear(8, 3))
    return gs.prepare(net, levels=4, threshold=1.0).eval()


def test_sweep_equals_evaluate_for_each_neuron():
    ann = small_ann()
    loader = [(torch.randn(16, 1, 8, 8), torch.randint(0, 3, (16,))) for _ in range(2)]
    results = sweep(ann, loader, taus=[2, 4], timesteps=[1, 3, 8])
    assert results["levels"] == 4 and results["ann_accuracy"] == pytest.approx(gs.evaluate(ann, loader, [1])[1])
    for neuron, tau in [("if", None), ("gn", 2), ("gn", 4)]:
        expected = gs.evaluate(gs.convert(ann, neuron, tau or 1), loader, [1, 3, 8])
        got = {r["timesteps"]: r["accuracy"] for r in results["snn"] if (r["neuron"], r["tau"]) == (neuron, tau)}
        assert got == pytest.approx(expected, abs=1e-4)
    assert len(results["snn"]) == 9


def fake_results():
    rows = [{"neuron": n, "tau": tau, "timesteps": t, "accuracy": 50.0 + t + (tau or 0)}
            for n, tau in [("if", None), ("gn", 2), ("gn", 8)] for t in (1, 2, 4)]
    return {"ann_accuracy": 90.0, "levels": 8, "snn": rows}


def test_plots_are_written_and_not_empty(tmp_path):
    layers = [{"layer": f"layer{i}", "firing_rate": 0.1 * i} for i in range(3)]
    runs = [{"neuron": "if", "tau": None, "layers": layers}, {"neuron": "gn", "tau": 4, "layers": layers}]
    for path in (plot_accuracy_vs_timesteps(fake_results(), tmp_path / "a.png"),
                 plot_effect_of_tau(fake_results(), tmp_path / "e.png", title="effect of τ"),
                 plot_firing_rates(runs, tmp_path / "f.png")):
        data = path.read_bytes()
        assert data[:8] == PNG and len(data) > 10_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "e.png", "f.png"]  # no temporary files left


def test_effect_of_tau_needs_group_neuron_rows(tmp_path):
    results = fake_results()
    results["snn"] = [r for r in results["snn"] if r["neuron"] == "if"]
    with pytest.raises(ValueError, match="no Group Neuron rows"):
        plot_effect_of_tau(results, tmp_path / "e.png")


def test_sweep_command_writes_table_files_and_plots(digits_checkpoint, tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["sweep", str(digits_checkpoint), "--taus", "2,8", "--timesteps", "1,4", "--out", str(out)]) == 0
    results = json.loads((out / "sweep.json").read_text())
    keys = [(r["neuron"], r["tau"], r["timesteps"]) for r in results["snn"]]
    assert keys == [(n, tau, t) for n, tau in [("if", None), ("gn", 2), ("gn", 8)] for t in (1, 4)]
    assert results["levels"] == 8 and results["model"] == "digits_cnn"
    with open(out / "sweep.csv", newline="") as f:
        assert [float(r["accuracy"]) for r in csv.DictReader(f)] == [r["accuracy"] for r in results["snn"]]
    for name in ("accuracy_vs_T.png", "effect_of_tau.png"):
        data = (out / name).read_bytes()
        assert data[:8] == PNG and len(data) > 10_000
    assert "GN τ=8" in capsys.readouterr().out
    # a second run refuses to overwrite
    assert main(["sweep", str(digits_checkpoint), "--taus", "2", "--timesteps", "1", "--out", str(out)]) == 2
