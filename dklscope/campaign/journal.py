"""`Journal`: the campaign's durable record, one SQLite database in write-ahead-log mode.

Every write is committed (and fsynced: ``synchronous=FULL``) before the call returns, so the
controller asks for the next move only once the last spectrum is on disk. `transaction`
groups several writes into one commit.

Tables (schema version 2; docs/journal.md describes them for readers in other languages):

- ``metadata(key, value)``: JSON values: ``schema`` (2), ``config`` (resolved), ``config_text``
  (verbatim), ``instrument`` (its description), ``versions``, ``embedding_training``.
- ``arrays(name, dtype, shape, data)``: named arrays: ``overview`` (rows, cols), the reference
  every position refers to, and ``overview.N`` for each overview re-acquired for drift.
- ``decisions``: every point chosen, in order, committed before its first move.
- ``measurements``: every attempt to measure a decision, in order, with its outcome.
- ``checkpoints(decision, state)``: the model learner's state after the fit behind a decision
  (`DKLLearner.state_bytes`); the newest, and every ``runner.checkpoint_every``-th, are kept.
- ``events(id, t, kind, detail)``: what happened to the campaign besides measurements: runs
  started and stopped, resumes and config changes, drift corrections.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA_VERSION = 2
JOURNAL_NAME = "journal.sqlite"  # a campaign's journal in its output folder
EMBEDDING_NAME = "embedding.pt"  # and its trained embedding, if it has one

SCHEMA = """
CREATE TABLE IF NOT EXISTS metadata (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS arrays (
    name TEXT PRIMARY KEY, dtype TEXT NOT NULL, shape TEXT NOT NULL, data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS decisions (
    number INTEGER PRIMARY KEY,       -- 0, 1, 2... in the order chosen
    kind TEXT NOT NULL,               -- 'seed' (random start) or 'policy'
    candidate INTEGER NOT NULL,       -- index into the candidate grid
    x REAL NOT NULL, y REAL NOT NULL, -- the candidate's position, reference overview pixels
    acquisition_value REAL,           -- the policy's value there (NULL: none)
    predicted_mean REAL, predicted_std REAL,  -- the model's prediction there (NULL: no model)
    n_train INTEGER NOT NULL,         -- measurements the model was fitted to
    t_decided REAL NOT NULL,          -- Unix seconds
    latency_s REAL NOT NULL           -- fit + choose, seconds
);
CREATE TABLE IF NOT EXISTS measurements (
    seq INTEGER PRIMARY KEY,          -- 0, 1, 2... in the order attempted
    decision INTEGER NOT NULL,        -- the decision measured (decisions.number)
    kind TEXT NOT NULL,               -- the decision's kind, candidate and prediction,
    candidate INTEGER NOT NULL,       -- copied for readers of this table alone
    x REAL NOT NULL, y REAL NOT NULL, -- position asked for, overview pixels (drift corrected)
    x_read REAL, y_read REAL,         -- position reported at acquisition (NULL: none)
    dwell_s REAL NOT NULL,            -- actual dwell (the asked one if none came back)
    spectrum BLOB NOT NULL,           -- float32 little-endian; empty when none came back
    scalar REAL,                      -- the scalarizer's value; NULL when not finite
    acquisition_value REAL,
    predicted_mean REAL, predicted_std REAL,
    t_decided REAL NOT NULL,          -- Unix seconds: decision made
    t_acquired REAL,                  -- Unix seconds: instrument's end of exposure (NULL: none)
    decision_latency_s REAL NOT NULL, -- fit + choose, seconds
    status TEXT NOT NULL,             -- 'ok', 'retried' (failed, tried again), 'failed'
    attempt INTEGER NOT NULL,         -- 0 for the first attempt at a decision
    error TEXT,                       -- what went wrong, for 'retried' and 'failed'
    t_requested REAL,                 -- Unix seconds: move + acquire sent
    t_done REAL,                      -- Unix seconds: reply received
    idle_s REAL                       -- instrument idle before this request (NULL: first of a run)
);
CREATE TABLE IF NOT EXISTS checkpoints (decision INTEGER PRIMARY KEY, state BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, t REAL NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL
);
"""


class JournalError(Exception):
    """The file is not a journal this version can continue."""


@dataclass(frozen=True)
class DecisionRecord:
    """One row of ``decisions``: a point chosen, journaled before it is measured."""

    number: int
    kind: str
    candidate: int
    x: float
    y: float
    acquisition_value: float | None
    predicted_mean: float | None
    predicted_std: float | None
    n_train: int
    t_decided: float
    latency_s: float


@dataclass(frozen=True)
class Measurement:
    """One row of ``measurements``; ``spectrum`` has shape (channels,) (0 when none came)."""

    seq: int
    decision: int
    kind: str
    candidate: int
    x: float
    y: float
    x_read: float
    y_read: float
    dwell_s: float
    spectrum: np.ndarray
    scalar: float
    acquisition_value: float | None
    predicted_mean: float | None
    predicted_std: float | None
    t_decided: float
    t_acquired: float
    decision_latency_s: float
    status: str = "ok"
    attempt: int = 0
    error: str | None = None
    t_requested: float = math.nan
    t_done: float = math.nan
    idle_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class Journal:
    """Open (or create) the journal at ``path`` (``":memory:"`` for one that is not kept).

    ``read_only``: open an existing journal for reading only, as another process may while the
    campaign writes it (a live view, a report): it takes no lock that could hold the writer up
    (write-ahead log: readers and the writer never wait for each other), every write raises
    `sqlite3.OperationalError`, and it may be used from a thread other than the one that
    opened it (one thread at a time).
    """

    def __init__(self, path: str | Path, *, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        if read_only:
            if not self.path.is_file():
                raise JournalError(f"{path}: no such journal")
            uri = f"{self.path.resolve().as_uri()}?mode=ro"
            self._db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        else:
            self._db = sqlite3.connect(path, isolation_level=None)  # we commit explicitly
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
        self._depth = 0
        with self.transaction():  # one snapshot, however the writer goes on
            version = self._metadata_or_none("schema") if self._has_table("metadata") else None
            older = version is None and self._has_table("measurements")
        if older:
            raise JournalError(f"{path}: a journal of an older dklscope (schema 1)")
        if version is not None and version != SCHEMA_VERSION:
            raise JournalError(f"{path}: journal schema {version}, this dklscope reads 2")
        if read_only:
            if version is None:
                raise JournalError(f"{path}: not a dklscope journal (yet)")
            return
        # The tables and the schema version commit together: a reader that opens the journal
        # while it is being made (a live view) sees nothing yet, never tables without a version.
        self._db.executescript(
            f"BEGIN IMMEDIATE;{SCHEMA}INSERT OR IGNORE INTO metadata "
            f"VALUES ('schema', '{json.dumps(SCHEMA_VERSION)}');COMMIT;"
        )

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def is_new(self) -> bool:
        """True until the campaign's config has been written."""
        return self._metadata_or_none("config") is None

    # -- writing ------------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Writes inside commit together, once, at the end (all or none of them). In a
        read-only journal, the reads inside see one state of it, however the writer goes on."""
        if self._depth == 0:
            self._db.execute("BEGIN" if self.read_only else "BEGIN IMMEDIATE")
        self._depth += 1
        try:
            yield
        except BaseException:
            self._depth -= 1
            if self._depth == 0:
                self._db.execute("ROLLBACK")
            raise
        self._depth -= 1
        if self._depth == 0:
            self._db.execute("COMMIT")

    def _write(self, sql: str, row: tuple | list) -> None:
        with self.transaction():
            self._db.execute(sql, row)

    def set_metadata(self, key: str, value: Any) -> None:
        self._write("INSERT OR REPLACE INTO metadata VALUES (?, ?)", (key, json.dumps(value)))

    def set_array(self, name: str, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array)
        self._write(
            "INSERT OR REPLACE INTO arrays VALUES (?, ?, ?, ?)",
            (name, array.dtype.str, json.dumps(array.shape), array.tobytes()),
        )

    def record_decision(self, d: DecisionRecord) -> None:
        self._write("INSERT INTO decisions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", astuple(d))

    def record(self, m: Measurement) -> None:
        """Write one measurement and commit it to disk before returning. NaN is stored as
        NULL (SQLite has no NaN) and read back as NaN."""
        row = [_nan_to_null(v) for v in astuple(m)]
        row[_SPECTRUM_AT] = np.asarray(m.spectrum, "<f4").tobytes()
        self._write(f"INSERT INTO measurements VALUES ({', '.join('?' * len(row))})", row)

    def save_checkpoint(self, decision: int, state: bytes, *, keep_every: int) -> None:
        """Keep ``state`` as the newest checkpoint; drop the previous newest unless its
        decision is a multiple of ``keep_every`` (0: keep only the newest)."""
        with self.transaction():
            self._db.execute(
                "DELETE FROM checkpoints WHERE decision < ? AND (? = 0 OR decision % ? != 0)",
                (decision, keep_every, keep_every or 1),
            )
            self._db.execute(
                "INSERT OR REPLACE INTO checkpoints VALUES (?, ?)",
                (decision, sqlite3.Binary(state)),
            )

    def log_event(self, kind: str, /, **detail: Any) -> None:
        """Journal an event of ``kind`` with ``detail`` (JSON). ``kind`` is positional-only, so
        a detail may hold a key ``kind`` of its own (a ``model`` event's ``model.kind``);
        `events` then shows the detail's."""
        self._write(
            "INSERT INTO events (t, kind, detail) VALUES (?, ?, ?)",
            (time.time(), kind, json.dumps(detail)),
        )

    # -- reading ------------------------------------------------------------------------------

    def metadata(self, key: str) -> Any:
        value = self._metadata_or_none(key)
        if value is None:
            raise KeyError(key)
        return value

    def _metadata_or_none(self, key: str) -> Any:
        row = self._db.execute("SELECT value FROM metadata WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def _has_table(self, name: str) -> bool:
        query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
        return self._db.execute(query, (name,)).fetchone() is not None

    def array(self, name: str) -> np.ndarray:
        row = self._db.execute(
            "SELECT dtype, shape, data FROM arrays WHERE name = ?", (name,)
        ).fetchone()
        if row is None:
            raise KeyError(name)
        return np.frombuffer(row[2], dtype=row[0]).reshape(json.loads(row[1]))

    def array_names(self) -> list[str]:
        return [row[0] for row in self._db.execute("SELECT name FROM arrays ORDER BY name")]

    def decisions(self, since: int = 0) -> list[DecisionRecord]:
        """The decisions numbered ``since`` and later, in order."""
        query = "SELECT * FROM decisions WHERE number >= ? ORDER BY number"
        return [DecisionRecord(*row) for row in self._db.execute(query, (since,)).fetchall()]

    def measurements(self, since: int = 0) -> list[Measurement]:
        """The measurements from ``seq`` ``since`` on, in order."""
        query = "SELECT * FROM measurements WHERE seq >= ? ORDER BY seq"
        rows = self._db.execute(query, (since,)).fetchall()
        out = []
        for row in rows:
            row = list(row)
            row[_SPECTRUM_AT] = np.frombuffer(row[_SPECTRUM_AT], dtype="<f4")
            for i in _NAN_WHEN_NULL:
                row[i] = math.nan if row[i] is None else row[i]
            out.append(Measurement(*row))
        return out

    def checkpoints(self) -> list[tuple[int, bytes]]:
        """``(decision, state)`` of every kept checkpoint, oldest first."""
        rows = self._db.execute("SELECT decision, state FROM checkpoints ORDER BY decision")
        return [(int(d), bytes(s)) for d, s in rows.fetchall()]

    def newest_checkpoint(self, after: int = -1) -> tuple[int, bytes] | None:
        """``(decision, state)`` of the newest checkpoint, if its decision is after ``after``."""
        row = self._db.execute(
            "SELECT decision, state FROM checkpoints WHERE decision > ? "
            "ORDER BY decision DESC LIMIT 1",
            (after,),
        ).fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))

    def events(self, kind: str | None = None, *, since: int = 0) -> list[dict[str, Any]]:
        """Every event (of ``kind``), oldest first, as ``{"t": ..., "kind": ..., **detail}``;
        ``since``: leave out the first ``since`` of them."""
        rows = self._db.execute(
            "SELECT t, kind, detail FROM events WHERE ? IS NULL OR kind = ? "
            "ORDER BY id LIMIT -1 OFFSET ?",
            (kind, kind, since),
        ).fetchall()
        return [{"t": t, "kind": k, **json.loads(detail)} for t, k, detail in rows]


def _nan_to_null(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


_SPECTRUM_AT = [f.name for f in fields(Measurement)].index("spectrum")
_NAN_WHEN_NULL = [i for i, f in enumerate(fields(Measurement)) if f.type == "float"]
