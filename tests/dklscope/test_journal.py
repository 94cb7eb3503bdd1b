import sqlite3
import time

import numpy as np
import pytest

from dklscope.campaign.journal import DecisionRecord, Journal, JournalError, Measurement


def measurement(seq, **overrides):
    fields = dict(
        seq=seq,
        decision=seq,
        kind="policy",
        candidate=17 + seq,
        x=3.0,
        y=4.0,
        x_read=3.0,
        y_read=4.0,
        dwell_s=0.05,
        spectrum=np.arange(8, dtype=np.float32) * (seq + 1),
        scalar=2.5 * seq,
        acquisition_value=0.1,
        predicted_mean=1.0,
        predicted_std=0.5,
        t_decided=100.0,
        t_acquired=101.0,
        decision_latency_s=0.01,
        status="ok",
        attempt=0,
        error=None,
        t_requested=100.5,
        t_done=101.2,
        idle_s=0.003,
    )
    return Measurement(**{**fields, **overrides})


def test_a_recorded_measurement_is_on_disk_before_record_returns(tmp_path):
    path = tmp_path / "journal.sqlite"
    with Journal(path) as journal:
        journal.record(measurement(0))
        # A separate connection (another process would do the same) sees it at once.
        other = sqlite3.connect(path)
        assert other.execute("SELECT COUNT(*) FROM measurements").fetchone()[0] == 1
        other.close()
        assert journal._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_measurements_metadata_and_arrays_read_back_exactly(tmp_path):
    path = tmp_path / "journal.sqlite"
    image = np.random.default_rng(0).normal(size=(5, 7)).astype(np.float32)
    written = [measurement(0, kind="seed", acquisition_value=None), measurement(1)]
    with Journal(path) as journal:
        for m in written:
            journal.record(m)
        journal.set_metadata("config", {"a": [1, 2]})
        journal.set_array("overview", image)
    with Journal(path) as journal:  # reopened
        read = journal.measurements()
        assert journal.metadata("config") == {"a": [1, 2]}
        np.testing.assert_array_equal(journal.array("overview"), image)
    assert len(read) == 2
    for a, b in zip(written, read, strict=True):
        np.testing.assert_array_equal(a.spectrum, b.spectrum)
        assert {k: v for k, v in vars(a).items() if k != "spectrum"} == {
            k: v for k, v in vars(b).items() if k != "spectrum"
        }


def test_a_non_finite_scalar_is_kept(tmp_path):
    with Journal(tmp_path / "j.sqlite") as journal:
        journal.record(measurement(0, scalar=float("nan")))
        (m,) = journal.measurements()
        assert np.isnan(m.scalar)
        np.testing.assert_array_equal(m.spectrum, measurement(0).spectrum)


def test_a_failed_attempt_without_a_spectrum_reads_back(tmp_path):
    failed = measurement(
        0,
        status="retried",
        error="no reply",
        spectrum=np.zeros(0, np.float32),
        scalar=float("nan"),
        x_read=float("nan"),
        idle_s=None,
    )
    with Journal(tmp_path / "j.sqlite") as journal:
        journal.record(failed)
        (m,) = journal.measurements()
    assert (m.status, m.error, m.spectrum.shape, m.idle_s) == ("retried", "no reply", (0,), None)
    assert np.isnan(m.x_read) and not m.ok


def test_decisions_events_and_a_transaction_commit_together(tmp_path):
    path = tmp_path / "j.sqlite"
    d = DecisionRecord(0, "seed", 5, 1.0, 2.0, None, None, None, 0, 10.0, 0.001)
    with Journal(path) as journal:
        with pytest.raises(RuntimeError), journal.transaction():
            journal.record_decision(d)
            journal.log_event("drift", dx=1.5)
            raise RuntimeError("killed half way")
        assert journal.decisions() == [] and journal.events() == []  # none of it
        with journal.transaction():
            journal.record_decision(d)
            journal.log_event("drift", dx=1.5)
    with Journal(path) as journal:
        assert journal.decisions() == [d]
        (event,) = journal.events("drift")
        assert event["dx"] == 1.5 and event["kind"] == "drift"


def test_checkpoints_keep_the_newest_and_every_kth(tmp_path):
    with Journal(tmp_path / "j.sqlite") as journal:
        for decision in range(10, 26):
            journal.save_checkpoint(decision, bytes([decision]), keep_every=5)
        kept = journal.checkpoints()
    assert [d for d, _ in kept] == [10, 15, 20, 25]
    assert kept[-1][1] == bytes([25])


def test_a_journal_of_another_schema_is_refused(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE measurements (seq INTEGER PRIMARY KEY)")
    db.commit()
    db.close()
    with pytest.raises(JournalError, match="older"):
        Journal(path)


def test_a_read_only_journal_neither_waits_for_nor_holds_up_the_writer(tmp_path):
    path = tmp_path / "journal.sqlite"
    with pytest.raises(JournalError, match="no such journal"):
        Journal(path, read_only=True)
    with Journal(path) as writer:
        writer.log_event("run_started", measurements=0)
        with Journal(path, read_only=True) as reader:
            with writer.transaction():  # the writer holds its write lock...
                writer.log_event("paused", measurements=0)
                started = time.perf_counter()
                assert [e["kind"] for e in reader.events()] == ["run_started"]  # ...reads go on
                assert time.perf_counter() - started < 0.5
            assert [e["kind"] for e in reader.events(since=1)] == ["paused"]
            with pytest.raises(sqlite3.OperationalError, match="readonly"):
                reader.log_event("resumed", paused_s=1.0)
            with reader.transaction():  # a reader's snapshot does not block a commit...
                reader.events()
                writer.log_event("resumed", paused_s=1.0)
                assert reader.events("resumed") == []  # ...nor sees it
            assert [e["kind"] for e in reader.events("resumed")] == ["resumed"]


def test_a_reader_never_sees_a_journal_being_created_as_another_schema(tmp_path):
    """Tables and schema version commit together: a live view opening the journal while the
    campaign creates it finds either nothing yet or a journal of this schema."""
    import threading

    seen: list[str] = []
    for i in range(30):
        path = tmp_path / f"{i}.sqlite"
        done = threading.Event()

        def read(path=path, done=done) -> None:
            while not done.is_set():
                try:
                    Journal(path, read_only=True).close()
                except JournalError as exc:
                    seen.append(str(exc))
                except sqlite3.DatabaseError:
                    pass  # the file exists but SQLite has not written its header yet

        reader = threading.Thread(target=read)
        reader.start()
        Journal(path).close()
        done.set()
        reader.join()
    odd = {s for s in seen if "no such journal" not in s and "(yet)" not in s}
    assert seen and not odd, odd
