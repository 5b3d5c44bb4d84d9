"""Exactly-once writes: numbered batches apply once, and a kill -9 mid-batch is rolled back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from graphite_istat.config import parse_storage_aggregation, parse_storage_schemas
from graphite_istat.config.storage_rules import StorageRules
from graphite_istat.store.batch import WriteBatch
from graphite_istat.store.check import check_store
from graphite_istat.store.store import Store

NOW = 1_700_000_000
SCHEMAS = "[all]\npattern = .*\nretentions = 10s:6h,1m:7d,10m:5y\n"


def rules() -> StorageRules:
    return StorageRules(parse_storage_schemas(SCHEMAS, "s"), parse_storage_aggregation("", "a"))


def batch(k: int, metrics: int) -> WriteBatch:
    names = [f"agent.m{i}" for i in range(metrics)]
    return WriteBatch.from_arrays(names, np.full(metrics, NOW - 3600 + k), np.full(metrics, float(k)))


def totals(store: Store, metrics: int) -> tuple[np.ndarray, np.ndarray]:
    names = [f"agent.m{i}" for i in range(metrics)]
    result = store.fetch(names, NOW - 86400 * 6, NOW, now=NOW, fields=("count", "sum"))
    count = np.zeros(metrics)
    total = np.zeros(metrics)
    for s in result.sets:
        idx = [int(n.rsplit("m", 1)[1]) for n in s.names]
        count[idx] = s.counters["count"].sum(axis=1)
        total[idx] = s.counters["sum"].sum(axis=1)
    return count, total


def test_a_resent_sequence_is_a_duplicate_and_changes_nothing(tmp_path: Path) -> None:
    with Store.open(tmp_path, rules(), writable=True) as store:
        first = store.write(batch(1, 10), now=NOW, source="a1", sequence=1)
        again = store.write(batch(1, 10), now=NOW, source="a1", sequence=1)
        older = store.write(batch(0, 10), now=NOW, source="a1", sequence=0)
        other = store.write(batch(2, 10), now=NOW, source="a2", sequence=1)
        assert first.accepted == 10 and not first.duplicate
        assert again.duplicate and again.accepted == 0
        assert older.duplicate
        assert not other.duplicate and other.accepted == 10
        assert store.last_sequence("a1") == 1 and store.last_sequence("a2") == 1
        count, total = totals(store, 10)
    assert count.tolist() == [2.0] * 10
    assert total.tolist() == [3.0] * 10
    with Store.open(tmp_path, rules(), writable=True) as store:
        assert store.last_sequence("a1") == 1
        assert store.write(batch(1, 10), now=NOW, source="a1", sequence=1).duplicate


WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    sys.path.insert(0, {tests!r})
    from test_store_exactly_once import batch, rules, NOW
    from graphite_istat.store.store import Store
    store = Store.open({storage!r}, rules(), writable=True)
    start = store.last_sequence("agent") + 1
    for seq in range(start, start + 100000):
        store.write(batch(seq % 3000, {metrics}), now=NOW, source="agent", sequence=seq)
        print(seq, flush=True)
    """
)


@pytest.mark.parametrize("kill_after", [0.3, 0.8, 1.5])
def test_kill_9_mid_batch_then_resend_counts_every_batch_once(tmp_path: Path, kill_after: float) -> None:
    metrics = 20_000  # big batches, so a kill lands inside one
    script = WRITER.format(tests=str(Path(__file__).parent), storage=str(tmp_path), metrics=metrics)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    acked: list[int] = []
    deadline = time.monotonic() + 60
    try:
        # Wait for the first acknowledged batch, then let it run a little.
        line = proc.stdout.readline()
        assert line, "writer died before its first batch"
        acked.append(int(line))
        time.sleep(kill_after)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
    acked += [int(x) for x in out.split()]
    assert time.monotonic() < deadline
    last_acked = acked[-1]

    with Store.open(tmp_path, rules(), writable=True) as store:
        applied = store.last_sequence("agent")
        # A batch may have committed after its ack line was lost with the process.
        assert applied in (last_acked, last_acked + 1)
        # The producer re-sends everything after the acks it got: only new ones apply.
        for seq in range(last_acked + 1, last_acked + 3):
            store.write(batch(seq % 3000, metrics), now=NOW, source="agent", sequence=seq)
        count, total = totals(store, metrics)
        final = store.last_sequence("agent")
    expected_sum = float(sum(seq % 3000 for seq in range(1, final + 1)))
    assert final == last_acked + 2
    assert (count == final).all(), f"counts {set(count.tolist())} != {final}"
    assert np.allclose(total, expected_sum)
    assert check_store(tmp_path) == []
