"""The benchmark runner's bookkeeping (its measurements are timings: they live in benchmarks/, not here)."""

import pytest

from benchmarks.run import _merged


def _result(mode: str, rows: dict[str, float], sections: dict[str, float]) -> dict:
    return {
        "mode": mode,
        "date": f"{mode}-date",
        "measurements": [{"name": k, "value": v} for k, v in rows.items()],
        "sections": {k: {"seconds": v} for k, v in sections.items()},
        "profile": {},
    }


def test_a_partial_run_replaces_its_own_rows_and_keeps_every_other_sections_numbers():
    """`--only eval` used to overwrite results.json with the eval rows alone: every other number was lost."""
    full = _result(
        "full",
        {"cache a": 1.0, "eval a": 2.0, "eval b": 3.0, "scaling a": 4.0},
        {"cache": 10, "eval": 20, "scaling": 40},
    )
    partial = _result("full", {"eval a": 2.5, "eval b": 3.5}, {"eval": 21})
    merged = _merged(full, partial)
    assert [(m["name"], m["value"]) for m in merged["measurements"]] == [
        ("cache a", 1.0),
        ("eval a", 2.5),
        ("eval b", 3.5),
        ("scaling a", 4.0),
    ]
    assert merged["sections"] == {
        "cache": {"seconds": 10},
        "eval": {"seconds": 21},
        "scaling": {"seconds": 40},
    }
    assert merged["date"] == "full-date", "the file's date stays the full run's; each section keeps its own"
    assert _merged(full, _result("quick", {"eval a": 9.0}, {"eval": 1})) == _result(
        "quick", {"eval a": 9.0}, {"eval": 1}
    )


def test_a_partial_run_keeps_the_gpu_section_unless_it_measures_it():
    previous = {**_result("full", {"a": 1.0}, {"loop": 1.0}), "gpu": {"status": "measured", "device": "H200"}}
    assert _merged(previous, _result("full", {"a": 2.0}, {"loop": 2.0}))["gpu"]["device"] == "H200"
    again = {**_result("full", {}, {"gpu": 1.0}), "gpu": {"status": "not measured", "reason": "no CUDA"}}
    assert _merged(previous, again)["gpu"]["status"] == "not measured"


def test_the_gpu_section_says_not_measured_without_cuda(tmp_path, monkeypatch):
    import json

    import torch

    from benchmarks.run import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "results.json"
    out.write_text(json.dumps({"mode": "full", "measurements": [{"name": "kept"}]}))
    assert main(["--only", "gpu", "--out", str(out), "--work", str(tmp_path / "work")]) == 0
    result = json.loads(out.read_text())
    assert result["gpu"]["status"] == "not measured" and "no CUDA" in result["gpu"]["reason"]
    assert result["measurements"] == [{"name": "kept"}]  # the CPU rows stay
    assert not (tmp_path / "work" / "datasets").exists()  # nothing generated to say so


@pytest.mark.slow  # two short trainings and two cache builds: make test-all
def test_the_gpu_measurement_runs_end_to_end_on_the_cpu(small_dataset, tmp_path):
    """The GPU script's code path, dry-run on the CPU with small sizes, so it still works when a GPU is lent."""
    from benchmarks.gpu import measure
    from tests.conftest import data_overrides

    section = measure(small_dataset, tmp_path, data_overrides(small_dataset, tmp_path / "cache"), "cpu", True)
    assert section["status"].startswith("cpu dry run")
    for row in ("mesonet_batch256", "efficientnet_lstm_default"):
        assert section[row]["images_per_s"] > 0 and 0 <= section[row]["data_wait_share"] <= 1
    assert (
        section["efficientnet_lstm_default"]["images_per_s"]
        > section["efficientnet_lstm_default"]["samples_per_s"]
    )
    assert section["cache_build_mtcnn"]["cpu_videos_per_s"] > 0


def _results(build_ratio=1.8, meso=(0.2, 0.1), lstm=(0.5, None)) -> dict:
    cost = "training cost per train video per epoch: "
    return {
        "measurements": [
            {"name": "cache build: 2 workers vs 1", "ratio": build_ratio},
            {"name": cost + "MesoNet", "value": meso[0], "baseline": meso[1], "details": {"cpu": "a CPU"}},
            {"name": cost + "ResNetLSTM", "value": lstm[0], "baseline": lstm[1]},
        ],
        "gpu": {"status": "not measured"},
    }


def test_the_projection_follows_the_measured_costs_and_names_them():
    from benchmarks.projection import BUILD_S_PER_VIDEO_960, DATASETS, markdown, project

    projection = project(_results(), nodes=4)
    celeb = next(row for row in projection["rows"] if row["dataset"] == "Celeb-DF v2")
    data = next(d for d in DATASETS if d.name == "Celeb-DF v2")
    # 2 workers at 1.8x one: 0.9 of twice the rate; 4 nodes of 16 cores
    assert celeb["build_h"]["2 cores"] == pytest.approx(data.videos * BUILD_S_PER_VIDEO_960 / 3600 / 1.8)
    assert celeb["build_h"]["4 nodes"] == pytest.approx(celeb["build_h"]["16 cores"] / 4)
    # the faster of bf16-mixed and fp32 on the measuring CPU: fp32 for MesoNet here
    assert celeb["epoch_h"]["MesoNet"] == pytest.approx(data.train_videos * 0.1 / 3600)
    assert celeb["epoch_h"]["ResNetLSTM"] == pytest.approx(data.train_videos * 0.5 / 3600)
    assert celeb["build_h"]["1 GPU"] is None and celeb["epoch_h"]["Xception"] is None
    slower = project(_results(meso=(0.4, 0.2)), nodes=4)["rows"][0]
    assert slower["epoch_h"]["MesoNet"] == pytest.approx(2 * projection["rows"][0]["epoch_h"]["MesoNet"])
    table = markdown(projection)
    assert table.count("\n| ") == len(DATASETS) and "not measured" in table
    assert all(data.source in table for data in DATASETS)
    assert "`python -m benchmarks.detectors`" in table and "fp32, the faster on a CPU" in table


def test_the_projection_measures_entry_sizes_of_a_built_cache(tmp_path):
    import numpy as np

    from benchmarks.projection import entry_bytes

    for i in range(2):
        np.save(tmp_path / f"{i}.npy", np.zeros((10, 32, 32, 3), np.uint8))
        (tmp_path / f"{i}.json").write_text("x" * 100)
    size, source = entry_bytes(tmp_path, frames=20)
    assert size == pytest.approx(2 * ((tmp_path / "0.npy").stat().st_size + 100)) and "2 entries" in source


def test_a_projection_without_measurements_claims_nothing():
    from benchmarks.projection import markdown, project

    table = markdown(project({"measurements": [], "gpu": {"status": "not measured"}}))
    first_row = table.splitlines()[2]
    assert first_row.count("not measured") == 8  # every build and epoch column; the size is arithmetic


def test_a_partial_run_drops_the_rows_its_sections_no_longer_produce():
    """A renamed row used to stay in results.json beside its successor, as if both were current."""
    previous = _result(
        "full", {"cache old name": 1.0, "cache kept": 2.0, "eval a": 3.0}, {"cache": 10, "eval": 20}
    )
    previous["sections"]["cache"]["rows"] = ["cache old name", "cache kept"]
    previous["sections"]["eval"]["rows"] = ["eval a"]
    current = _result("full", {"cache new name": 1.5, "cache kept": 2.5}, {"cache": 11})
    current["sections"]["cache"]["rows"] = ["cache new name", "cache kept"]
    merged = _merged(previous, current)
    assert [(m["name"], m["value"]) for m in merged["measurements"]] == [
        ("cache kept", 2.5),
        ("eval a", 3.0),
        ("cache new name", 1.5),
    ]
    assert merged["sections"]["eval"]["rows"] == ["eval a"]
