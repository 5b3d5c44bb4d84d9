"""The shard file's bytes are where format.py says they are, and files of another version are refused."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from store_helpers import RULES

from graphite_istat.store.batch import WriteBatch
from graphite_istat.store.format import HEADER_SIZE, CorruptFileError
from graphite_istat.store.shardfile import ShardFile
from graphite_istat.store.store import Store, StoreOptions

NOW = 1_600_000_000
PAGE = 4096


def _page_align(n: int) -> int:
    return -(-n // PAGE) * PAGE


def _documented_offsets(raw: bytes) -> dict:
    """Offsets of archive 0's stamps, count and sum in block 0, worked out from the format text alone."""
    _, version, _, columns, flags, narchives, tile_rows, block_bytes = struct.unpack_from("<8sIIIIIIQ", raw, 0)
    step, rows = struct.unpack_from("<II", raw, 40)
    (spare,) = struct.unpack_from("<I", raw, 168)
    ring = rows + spare
    tiles = -(-ring // tile_rows)
    stamps = _page_align(64 + columns * 16)
    count = _page_align(stamps + ring * 8)
    total = _page_align(count + tiles * tile_rows * columns * 4)
    return {
        "version": version,
        "columns": columns,
        "tile_rows": tile_rows,
        "block_bytes": block_bytes,
        "step": step,
        "ring": ring,
        "stamps": HEADER_SIZE + stamps,
        "count": HEADER_SIZE + count,
        "sum": HEADER_SIZE + total,
        "with_last": bool(flags & 1),
        "archives": narchives,
    }


def test_a_cell_is_at_tile_column_row_in_tile(tmp_path: Path) -> None:
    options = StoreOptions(shards=1, block_columns=4, tile_rows=8)
    names = [f"small.m{i}" for i in range(4)]
    with Store.open(tmp_path / "store", RULES, writable=True, options=options) as store:
        points = [(name, NOW - age, 100.0 * m + age) for m, name in enumerate(names) for age in range(0, 30, 3)]
        store.write(WriteBatch.from_points(points), now=NOW)
        columns = {name: store.info(name).slot & 0xFFFFFFFF for name in names}
        path = store.info(names[0]).path
    raw = path.read_bytes()
    at = _documented_offsets(raw)
    assert (at["version"], at["columns"], at["tile_rows"]) == (3, 4, 8)
    # block 0's rolled_until: a finest step before the clock of the write
    (rolled_until,) = struct.unpack_from("<q", raw, HEADER_SIZE + 24)
    assert rolled_until == NOW - at["step"]
    checked = 0
    for m, name in enumerate(names):
        column = columns[name]
        for age in range(0, 30, 3):
            ts = NOW - age
            bucket = ts - ts % at["step"]
            row = bucket // at["step"] % at["ring"]
            (stamp,) = struct.unpack_from("<q", raw, at["stamps"] + 8 * row)
            assert stamp == bucket
            cell = (row // 8) * 4 * 8 + column * 8 + row % 8
            (count,) = struct.unpack_from("<I", raw, at["count"] + 4 * cell)
            (total,) = struct.unpack_from("<d", raw, at["sum"] + 8 * cell)
            assert (count, total) == (1, 100.0 * m + age), (name, age)
            checked += 1
    assert checked == 40


def test_a_metrics_buckets_of_one_tile_are_contiguous(tmp_path: Path) -> None:
    options = StoreOptions(shards=1, block_columns=4, tile_rows=8)
    with Store.open(tmp_path / "store", RULES, writable=True, options=options) as store:
        store.write(WriteBatch.from_points([("small.a", NOW - age, 1.0) for age in range(40)]), now=NOW)
        path = store.info("small.a").path
        column = store.info("small.a").slot & 0xFFFFFFFF
    raw = path.read_bytes()
    at = _documented_offsets(raw)
    written = {(NOW - age) // at["step"] % at["ring"] for age in range(40)}
    full = [t for t in range(at["ring"] // 8) if all(t * 8 + k in written for k in range(8))]
    assert full, "40 consecutive buckets cover at least one whole tile of 8"
    for tile in full:
        run = at["count"] + 4 * (tile * 4 * 8 + column * 8)
        assert np.frombuffer(raw, "<u4", 8, run).tolist() == [1] * 8
        # the next column's run of the same tile follows it directly, and is empty
        assert np.frombuffer(raw, "<u4", 8, run + 32).tolist() == [0] * 8


def _rewrite_header(path: Path, **fields) -> None:
    """Set header fields and fix the checksum, as a file of another version would have them."""
    raw = bytearray(path.read_bytes())
    names = ["magic", "version", "shard", "columns", "flags", "archives", "tile_rows", "block_bytes"]
    values = dict(zip(names, struct.unpack_from("<8sIIIIIIQ", raw, 0), strict=True))
    values.update(fields)
    struct.pack_into("<8sIIIIIIQ", raw, 0, *(values[n] for n in names))
    struct.pack_into("<I", raw, HEADER_SIZE - 4, zlib.crc32(bytes(raw[: HEADER_SIZE - 4])))
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": 1}, "format version 1, this program reads 3"),
        ({"version": 2}, "format version 2, this program reads 3"),
        ({"tile_rows": 0}, "0 rows per tile"),
        ({"tile_rows": 32}, "does not match its layout"),
    ],
)
def test_a_file_of_another_version_or_tiling_is_refused_by_name(tmp_path: Path, change, message) -> None:
    with Store.open(tmp_path / "store", RULES, writable=True) as store:
        store.write(WriteBatch.from_points([("small.a", NOW, 1.0)]), now=NOW)
        path = store.info("small.a").path
    _rewrite_header(path, **change)
    with pytest.raises(CorruptFileError) as caught:
        ShardFile.open(path, writable=False)
    assert str(path) in str(caught.value) and message in str(caught.value)


def test_a_store_description_of_format_version_2_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    with Store.open(directory, RULES, writable=True):
        pass
    meta = directory / "store.json"
    meta.write_text(meta.read_text().replace('"version": 3', '"version": 2'))
    with pytest.raises(CorruptFileError, match="format version 2, expected 3"):
        Store.open(directory, RULES, writable=False)
