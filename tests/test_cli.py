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


def test_checkpoint_commands_write_into_runs_in_the_current_folder(digits_checkpoint, tmp_path, monkeypatch):
    """Never beside the checkpoint (shipped weights live inside the installed package), and named
    after what was run, so that other settings need no --overwrite."""
    beside = sorted(digits_checkpoint.parent.iterdir())
    monkeypatch.chdir(tmp_path)
    ckpt, name = str(digits_checkpoint), digits_checkpoint.parent.name  # checkpoint.pt: named after its folder
    few = ["--per-class", "2", "--batch-size", "20"]
    assert main(["evaluate", ckpt, "--timesteps", "1", *few]) == 0
    assert main(["evaluate", ckpt, "--timesteps", "1,2", *few]) == 0
    assert main(["evaluate", ckpt, "--timesteps", "1", "--neuron", "if", "--signed", *few]) == 0
    assert main(["sweep", ckpt, "--taus", "2", "--timesteps", "1", "--energy-batches", "1", *few]) == 0
    assert main(["stats", ckpt, "--timesteps", "1", "--batches", "1", *few]) == 0
    assert sorted(digits_checkpoint.parent.iterdir()) == beside
    written = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.json")}
    assert written == {f"runs/evaluate-{name}-2-per-class/evaluate_gn_tau4_T1.json",
                       f"runs/evaluate-{name}-2-per-class/evaluate_gn_tau4_T1,2.json",
                       f"runs/evaluate-{name}-2-per-class-signed/evaluate_if_signed_T1.json",
                       f"runs/sweep-{name}-2-per-class-taus2-T1/sweep.json",
                       f"runs/stats-{name}-2-per-class-gn-tau4-T1/stats.json"}


def test_evaluate_into_one_out_keeps_the_runs_of_other_timesteps(digits_checkpoint, tmp_path, capsys):
    args = ["evaluate", str(digits_checkpoint), "--per-class", "2", "--out", str(tmp_path), "--timesteps"]
    assert main([*args, "1"]) == 0 and main([*args, "2,4"]) == 0
    assert main([*args, "1"]) == 2 and "evaluate_gn_tau4_T1.json exists; pass --overwrite" in capsys.readouterr().err
    assert main([*args, "1", "--overwrite"]) == 0
    assert {p.name for p in tmp_path.iterdir()} == {f"evaluate_gn_tau4_{t}.{ext}" for t in ("T1", "T2,4")
                                                    for ext in ("json", "csv")}
