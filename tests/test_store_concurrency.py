"""One writer and many readers at once.

* Readers in their own processes read while a writer process writes; every
  read must be consistent. The writer's data makes a torn bucket visible:
  batch k puts points of value k+1 into second k only, so a finest bucket is
  either empty or exactly (3 points, all k+1), and a 10 s bucket holds the
  first n of its batches in order.
* A reader picks up metrics and files the writer creates after it opened,
  without reopening.
"""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from store_helpers import (
    RULES,
    ReferenceStore,
    child_command,
    child_env,
    compare_archive,
    read_stats,
    shape_of,
)

from graphite_istat.store.batch import WriteBatch
from graphite_istat.store.store import Store, StoreError, StoreOptions

# ------------------------------------------------------------------ readers during writes

CONC_BATCHES = 700  # more than the 600 rows of the finest ring: rows are reused while read
CONC_METRICS = 300
CONC_READERS = 3


def test_readers_never_see_a_torn_bucket_while_the_writer_writes(tmp_path: Path) -> None:
    env = child_env()
    writer = subprocess.Popen(
        child_command("conc-writer", tmp_path, CONC_BATCHES, CONC_METRICS, CONC_READERS),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    readers = [
        subprocess.Popen(
            child_command("conc-reader", tmp_path, r, CONC_BATCHES, CONC_METRICS),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for r in range(CONC_READERS)
    ]
    w_out, w_err = writer.communicate(timeout=150)
    assert writer.returncode == 0, w_out + w_err[-3000:]
    for r, reader in enumerate(readers):
        out, err = reader.communicate(timeout=150)
        assert out.strip(), f"reader {r} printed nothing: {err[-3000:]}"
        summary = json.loads(out.strip().splitlines()[-1])
        assert summary["problems"] == [], f"reader {r}: {summary}"
        assert reader.returncode == 0, err[-3000:]
        assert summary["reads"] > 0, f"reader {r} did no read while the writer wrote"


# ------------------------------------------------------------------ new metrics and files


def test_a_reader_sees_metrics_and_files_created_after_it_opened(tmp_path: Path) -> None:
    now = 1_600_000_000
    ref = ReferenceStore(600)
    with Store.open(tmp_path, RULES, writable=True, options=StoreOptions(shards=2, block_columns=4)) as writer:
        first = [("small.first", now - 5, 1.0)]
        writer.write(WriteBatch.from_points(first), now=now)
        ref.write(first, now)
        with Store.open(tmp_path, writable=False) as reader:
            assert reader.match("**") == ["small.first"]
            files_before = len(list((tmp_path / "data").glob("*.ist")))
            # New metrics: other shards, other schemas (new files) and enough to grow a file by blocks.
            later = [(f"small.n{i:02d}", now - 1 - i % 7, float(i)) for i in range(20)]
            later += [("big.new", now - 30, 2.0), ("keep.new", now - 2, 3.0), ("small.n00.lastm", now - 4, 4.0)]
            writer.write(WriteBatch.from_points(later), now=now)
            ref.write(later, now)
            assert len(list((tmp_path / "data").glob("*.ist"))) > files_before
            names = sorted({n for n, _, _ in first + later})
            assert reader.match("**") == names  # no reopen
            assert "big.new" in reader
            assert reader.info("keep.new").layout.keep_last
            result = reader.fetch(names, now - 60, now, now=now)
            assert not result.missing and not result.errors
            shapes = {n: shape_of(reader, n) for n in names}
            cells = ref.cells(shapes)
            problems = []
            for name in names:
                read = read_stats(reader, [name], 0, 0, now)[name]
                problems += compare_archive(name, 0, read, cells.get((name, 0), {}))
            assert not problems, "\n".join(problems)
            # Points written into metrics the reader already read show on the next read.
            again = [("small.first", now - 1, 9.0)]
            writer.write(WriteBatch.from_points(again), now=now)
            ref.write(again, now)
            read = read_stats(reader, ["small.first"], 0, 0, now)["small.first"]
            assert compare_archive("small.first", 0, read, ref.cells(shapes)[("small.first", 0)]) == []


def test_a_reader_arriving_before_the_writer_finished_creating_the_directory(tmp_path: Path) -> None:
    # The writer creates names.log, then store.json: a reader arriving before store.json gets
    # a StoreError saying so, not a stray FileNotFoundError or an empty store.
    with pytest.raises(StoreError, match=r"store\.json"):
        Store.open(tmp_path, writable=False)
    Store.open(tmp_path / "s", RULES, writable=True).close()
    (tmp_path / "s" / "store.json").unlink()
    with pytest.raises(StoreError, match=r"store\.json"):
        Store.open(tmp_path / "s", writable=False)


def test_writes_from_several_threads_of_the_writer_process_are_all_applied(tmp_path: Path) -> None:
    now = 1_600_000_000
    batches = [
        [(f"small.t{(t * 7 + i) % 40:02d}", now - (i * 13 + t) % 1700, float(t * 1000 + i)) for i in range(300)]
        for t in range(16)
    ]
    ref = ReferenceStore(600)
    with Store.open(tmp_path, RULES, writable=True) as store:
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda b: store.write(WriteBatch.from_points(b), now=now), batches))
        assert sum(r.accepted for r in results) == sum(len(b) for b in batches)
        assert sum(r.created for r in results) == 40
        for batch in batches:
            ref.write(batch, now)
    with Store.open(tmp_path, writable=False) as reader:
        names = reader.match("**")
        shapes = {n: shape_of(reader, n) for n in names}
        cells = ref.cells(shapes)
        problems = []
        for archive in range(3):
            reads = read_stats(reader, names, archive, 0, now)
            for name in names:
                problems += compare_archive(name, archive, reads[name], cells.get((name, archive), {}))
        assert not problems, "\n".join(problems[:10])
