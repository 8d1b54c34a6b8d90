import csv
import json

import pytest
import torch
import torch.nn as nn

import groupsnn as gs
from groupsnn.cli import main
from groupsnn.plots import plot_accuracy_vs_energy, plot_accuracy_vs_timesteps, plot_effect_of_tau, plot_firing_rates
from groupsnn.stats import layer_stats
from groupsnn.sweep import mark_pareto, sweep

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


def dominated(row, rows):
    return any(o["accuracy"] >= row["accuracy"] and o["snn_energy_uj"] <= row["snn_energy_uj"]
               and (o["accuracy"] > row["accuracy"] or o["snn_energy_uj"] < row["snn_energy_uj"]) for o in rows)


def test_sweep_energy_is_that_of_layer_stats_and_the_front_is_undominated():
    ann = small_ann()
    loader = [(torch.randn(16, 1, 8, 8), torch.randint(0, 3, (16,))) for _ in range(3)]
    results = sweep(ann, loader, taus=[2, 4], timesteps=[1, 2, 4], energy_batches=2)
    assert results["energy_samples"] == 32
    rows = results["snn"]
    for row in rows:
        snn = gs.convert(ann, row["neuron"], row["tau"] or 1)
        totals = layer_stats(snn, loader[:2], row["timesteps"], ann)["totals"]
        assert row["sops"] == pytest.approx(totals["sops"], rel=0.02)
        assert row["snn_energy_uj"] == pytest.approx(totals["snn_energy_uj"], rel=0.02)
        assert results["ann_energy_uj"] == pytest.approx(totals["ann_energy_uj"])
    for neuron, tau in [("if", None), ("gn", 2), ("gn", 4)]:
        energies = [r["snn_energy_uj"] for r in rows if (r["neuron"], r["tau"]) == (neuron, tau)]
        assert energies == sorted(energies) and energies[0] < energies[-1]  # cumulative over steps 1..T
    assert any(r["pareto"] for r in rows)
    assert all(r["pareto"] == (not dominated(r, rows)) for r in rows)
    assert "energy_samples" not in sweep(ann, loader, taus=[2], timesteps=[1], energy_batches=0)


def test_pareto_needs_one_strict_improvement():
    rows = mark_pareto([{"accuracy": a, "snn_energy_uj": e} for a, e in
                        [(90, 2.0), (90, 2.0), (80, 1.0), (80, 1.5), (95, 1.0), (70, 0.5), (95, 3.0)]])
    assert [r["pareto"] for r in rows] == [False, False, False, False, True, True, False]
    tie = mark_pareto([{"accuracy": 90, "snn_energy_uj": 2.0}, {"accuracy": 90, "snn_energy_uj": 2.0}])
    assert [r["pareto"] for r in tie] == [True, True]


def fake_results():
    rows = [{"neuron": n, "tau": tau, "timesteps": t, "accuracy": 50.0 + t + (tau or 0)}
            for n, tau in [("if", None), ("gn", 2), ("gn", 8)] for t in (1, 2, 4)]
    return {"ann_accuracy": 90.0, "levels": 8, "snn": rows}


def test_plots_are_written_and_not_empty(tmp_path):
    layers = [{"layer": f"layer{i}", "firing_rate": 0.1 * i} for i in range(3)]
    runs = [{"neuron": "if", "tau": None, "layers": layers}, {"neuron": "gn", "tau": 4, "layers": layers}]
    with_energy = fake_results()
    for r in with_energy["snn"]:
        r["snn_energy_uj"] = r["timesteps"] * (r["tau"] or 1) * 0.1
    with_energy["ann_energy_uj"] = 2.0
    mark_pareto(with_energy["snn"])
    for path in (plot_accuracy_vs_timesteps(fake_results(), tmp_path / "a.png"),
                 plot_effect_of_tau(fake_results(), tmp_path / "e.png", title="effect of τ"),
                 plot_firing_rates(runs, tmp_path / "f.png"),
                 plot_accuracy_vs_energy(with_energy, tmp_path / "p.png")):
        data = path.read_bytes()
        assert data[:8] == PNG and len(data) > 10_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "e.png", "f.png", "p.png"]  # no temporaries
    with pytest.raises(ValueError, match="no energy"):
        plot_accuracy_vs_energy(fake_results(), tmp_path / "q.png")


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
        table = list(csv.DictReader(f))
    assert [float(r["accuracy"]) for r in table] == [r["accuracy"] for r in results["snn"]]
    assert [float(r["snn_energy_uj"]) for r in table] == [r["snn_energy_uj"] for r in results["snn"]]
    assert [r["pareto"] for r in table] == [str(r["pareto"]) for r in results["snn"]]
    assert results["energy_samples"] == 360 and results["ann_energy_uj"] > 0  # 3 batches: all the test images
    assert max(r["sops"] for r in results["snn"]) > 0 and any(r["pareto"] for r in results["snn"])
    for name in ("accuracy_vs_T.png", "effect_of_tau.png", "accuracy_vs_energy.png"):
        data = (out / name).read_bytes()
        assert data[:8] == PNG and len(data) > 10_000
    assert "GN τ=8" in capsys.readouterr().out
    # a second run refuses to overwrite
    assert main(["sweep", str(digits_checkpoint), "--taus", "2", "--timesteps", "1", "--out", str(out)]) == 2
