"""The benchmark runner's bookkeeping (its measurements are timings: they live in benchmarks/, not here)."""

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
