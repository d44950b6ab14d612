"""ResultsTable: locked appends from real concurrent processes, damaged rows reported and dropped."""

from __future__ import annotations

import csv
import multiprocessing
import threading
import time
import warnings
from pathlib import Path

import pytest

from common.errors import InputError
from common.results_table import ResultsTable

COLUMNS = ["name", "psnr", "writer"]


def _table(path: Path, **options: object) -> ResultsTable:
    return ResultsTable(path, COLUMNS, numeric={"psnr"}, **options)


def _append_many(path: str, writer: int, barrier: object) -> None:
    table = _table(Path(path))
    barrier.wait()  # type: ignore[attr-defined]
    for index in range(120):  # both processes try the same 120 names, in the same order ...
        table.append({"name": f"shared{index}", "psnr": 30 + index / 7, "writer": writer})
        if index % 3 == 0:  # ... and some of their own
            table.append({"name": f"own{writer}_{index}", "psnr": 1.5, "writer": writer})


def test_two_processes_appending_at_once_never_duplicate_or_interleave_rows(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    workers = [context.Process(target=_append_many, args=(str(path), writer, barrier)) for writer in (0, 1)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [worker.exitcode for worker in workers] == [0, 0]
    lines = path.read_bytes().split(b"\r\n")
    assert lines[-1] == b"" and lines[0] == b"name,psnr,writer"
    parsed = list(csv.reader(line.decode() for line in lines[1:-1]))
    names = [fields[0] for fields in parsed]
    expected = {f"shared{i}" for i in range(120)} | {f"own{w}_{i}" for w in (0, 1) for i in range(0, 120, 3)}
    assert len(names) == len(set(names)) == len(expected) and set(names) == expected
    assert all(len(fields) == 3 and float(fields[1]) > 0 and fields[2] in ("0", "1") for fields in parsed)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing in it is damaged
        assert len(_table(path).rows()) == len(expected)


def test_truncated_last_row_is_reported_dropped_and_recomputed(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    table = _table(path)
    for name, value in (("a", 31.5), ("b", 28.25)):
        assert table.append({"name": name, "psnr": value, "writer": 0})
    whole = path.read_bytes()
    path.write_bytes(whole[:-6])  # power lost in the middle of writing row b
    with pytest.warns(UserWarning, match=r"results.csv line 3: incomplete last row \(no line end\) \('b,28\.'\); "
                                         r"row dropped, it will be computed again"):
        assert table.keys() == {"a"}
    assert path.read_bytes() == b"name,psnr,writer\r\na,31.5,0\r\n"  # repaired on disk
    assert table.append({"name": "b", "psnr": 28.25, "writer": 1})
    assert [row["writer"] for row in table.rows()] == ["0", "1"]


def test_each_kind_of_damaged_row_is_named_and_dropped(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    path.write_bytes(b"name,psnr,writer\r\n" b"ok1,30,0\r\n" b"short,30\r\n" b"text,abc,0\r\n"
                     b"ok1,31,1\r\n" b"nul,3\x00\x00,0\r\n" b"ok2,inf,0\r\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = _table(path).rows()
    assert [row["name"] for row in rows] == ["ok1", "ok2"] and rows[0]["psnr"] == "30"
    messages = [str(item.message) for item in caught]
    assert len(messages) == 4
    for number, reason in ((3, "2 fields instead of 3"), (4, "psnr is 'abc', not a number"),
                           (5, "name 'ok1' repeats an earlier row"), (6, "unreadable row")):
        assert any(f"line {number}: {reason}" in message for message in messages), (number, messages)
    assert path.read_bytes() == b"name,psnr,writer\r\nok1,30,0\r\nok2,inf,0\r\n"


def test_a_second_user_of_the_table_waits_or_refuses(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    first = _table(path)
    with first.locked():
        first.append({"name": "a", "psnr": 1, "writer": 0})  # re-entrant inside its own lock
        with pytest.raises(InputError, match=r"results.csv is in use by another process .*held for over 0.2 s\); "
                                             r"wait for it to finish or choose another output folder$"):
            _table(path, timeout=0.2).rows()
    holder = _table(path)
    entered = threading.Event()

    def hold() -> None:
        with holder.locked():
            entered.set()
            time.sleep(0.3)

    thread = threading.Thread(target=hold)
    thread.start()
    entered.wait()
    start = time.monotonic()
    assert _table(path).append({"name": "b", "psnr": 2, "writer": 1})  # waits for the holder
    assert time.monotonic() - start > 0.1
    thread.join()
    assert [row["name"] for row in first.rows()] == ["a", "b"]


def test_existing_table_keeps_its_columns_and_foreign_files_are_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    with open(path, "w", newline="") as handle:  # written by csv.DictWriter, as earlier versions did
        writer = csv.DictWriter(handle, fieldnames=["name", "psnr"])
        writer.writeheader()
        writer.writerow({"name": "old", "psnr": "29.1"})
    table = _table(path)
    assert table.header == ["name", "psnr"]
    assert not table.append({"name": "old", "psnr": 1, "writer": 0})  # already there: not written again
    assert table.append({"name": "new", "psnr": 30, "writer": 0})
    assert path.read_bytes() == b"name,psnr\r\nold,29.1\r\nnew,30\r\n"
    with pytest.raises(ValueError, match="line break"):
        table.append({"name": "a\nb", "psnr": 1})
    with pytest.raises(ValueError, match=r"lacks \['psnr'\]"):
        table.append({"name": "c"})
    notes = tmp_path / "notes.csv"
    notes.write_bytes(b"my own notes\r\nkeep me\r\n")
    with pytest.raises(InputError, match=r"notes.csv is not a results table of this toolkit"):
        _table(notes).rows()
    assert notes.read_bytes() == b"my own notes\r\nkeep me\r\n"
    torn = tmp_path / "torn.csv"
    torn.write_bytes(b"name,ps")  # stopped while writing the header with the first row
    with pytest.warns(UserWarning, match="incomplete header"):
        assert _table(torn).rows() == []
    assert _table(torn).append({"name": "x", "psnr": 1, "writer": 0})
    assert torn.read_bytes() == b"name,psnr,writer\r\nx,1,0\r\n"
