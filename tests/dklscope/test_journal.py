import sqlite3

import numpy as np

from dklscope.journal import Journal, Measurement


def measurement(seq, **overrides):
    fields = dict(
        seq=seq,
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
