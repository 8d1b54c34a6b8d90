import json

from groupsnn.cli import main


def test_demo_writes_results_json_and_plot(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--epochs", "2", "--taus", "2,8", "--timesteps", "1,4"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["levels"] == 8 and 0 <= results["ann_accuracy"] <= 100
    keys = {(r["neuron"], r["tau"], r["timesteps"]) for r in results["snn"]}
    assert keys == {(n, tau, t) for n, tau in [("if", None), ("gn", 2), ("gn", 8)] for t in (1, 4)}
    assert all(set(r) == {"neuron", "tau", "timesteps", "accuracy"} for r in results["snn"])
    png = (out / "accuracy_vs_T.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert "GN τ=8" in capsys.readouterr().out


def test_demo_refuses_to_overwrite_and_changes_nothing(tmp_path, capsys):
    (tmp_path / "results.json").write_text("precious")
    assert main(["demo", "--out", str(tmp_path), "--epochs", "1"]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert (tmp_path / "results.json").read_text() == "precious"
