"""Streaming export: complete files or none, every column, constant memory through batches."""

from __future__ import annotations

import csv
import io
import json
import tracemalloc
from dataclasses import replace

import pytest

from streamwarden import InvalidInputError
from streamwarden.audit.export import export_records
from streamwarden.audit.report import COLUMNS
from tests.audit.histories import fill, open_log, synthetic_records


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_jsonl_one_object_a_line_in_order(tmp_path):
    records = list(synthetic_records(25))
    target = tmp_path / "audit.jsonl"
    assert export_records(iter(records), "jsonl", target) == 25
    rows = read_jsonl(target)
    assert [row["seq"] for row in rows] == list(range(1, 26))
    assert all(list(row) == list(COLUMNS) for row in rows)
    assert rows[3]["details"] == {"index": 3} and rows[3]["row_hash"] == records[3].row_hash
    assert list(tmp_path.iterdir()) == [target]


def test_csv_header_and_rows(tmp_path):
    target = tmp_path / "audit.csv"
    assert export_records(synthetic_records(7), "csv", target) == 7
    with target.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["seq"]) for row in rows] == list(range(1, 8))
    assert list(rows[0]) == list(COLUMNS)


def test_an_empty_export_is_a_valid_empty_file(tmp_path):
    assert export_records(iter(()), "jsonl", tmp_path / "a.jsonl") == 0
    assert (tmp_path / "a.jsonl").read_text() == ""
    assert export_records(iter(()), "csv", tmp_path / "a.csv") == 0
    assert (tmp_path / "a.csv").read_text().strip() == ",".join(COLUMNS)


def test_progress_every_n_rows(tmp_path):
    progress = io.StringIO()
    export_records(synthetic_records(25), "jsonl", tmp_path / "a.jsonl", progress=progress,
                   progress_every=10)
    assert progress.getvalue().splitlines() == ["exported 10 records ...",
                                               "exported 20 records ..."]


class SourceFailedError(RuntimeError):
    pass


def failing_after(count):
    for index, sealed in enumerate(synthetic_records(count + 1)):
        if index == count:
            raise SourceFailedError("database went away")
        yield sealed


def test_a_failed_export_leaves_no_half_file_and_keeps_the_old_one(tmp_path):
    target = tmp_path / "audit.jsonl"
    with pytest.raises(SourceFailedError):
        export_records(failing_after(5), "jsonl", target)
    assert list(tmp_path.iterdir()) == []
    target.write_text("previous export\n")
    with pytest.raises(SourceFailedError):
        export_records(failing_after(5), "csv", target)
    assert list(tmp_path.iterdir()) == [target]
    assert target.read_text() == "previous export\n"


def test_unserialisable_record_fails_cleanly(tmp_path):
    (bad,) = [replace(r, details={"x": float("nan")}) for r in synthetic_records(1)]
    with pytest.raises(ValueError, match="JSON"):
        export_records(iter([bad]), "jsonl", tmp_path / "a.jsonl")
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments(tmp_path):
    with pytest.raises(InvalidInputError, match="jsonl, csv"):
        export_records(iter(()), "json", tmp_path / "a.json")
    with pytest.raises(InvalidInputError, match="progress_every"):
        export_records(iter(()), "csv", tmp_path / "a.csv", progress_every=0)
    with pytest.raises(FileNotFoundError):
        export_records(synthetic_records(3), "csv", tmp_path / "missing" / "a.csv")
    assert list(tmp_path.iterdir()) == []


def test_export_streams_from_the_database_in_batches(db_url, tmp_path):
    """Many rows through small batches of ``iter_records``: the file is complete and in seq
    order, and the export's peak memory is a fraction of holding every record at once."""
    rows = 3_000
    with open_log(db_url, batched=True) as log:
        fill(log, rows)
        tracemalloc.start()
        try:
            everything = list(log.iter_records(batch_size=100))
            _, materialised_peak = tracemalloc.get_traced_memory()
            del everything
            tracemalloc.reset_peak()
            target = tmp_path / "audit.jsonl"
            assert export_records(log.iter_records(batch_size=100), "jsonl", target) == rows
            _, export_peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert export_peak < materialised_peak / 4, (export_peak, materialised_peak)
    exported = read_jsonl(target)
    assert [row["seq"] for row in exported] == list(range(1, rows + 1))
    assert [row["event_id"] for row in exported] == [f"ev-{i:08d}" for i in range(rows)]
