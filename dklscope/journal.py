"""`Journal`: the campaign's durable record, one SQLite database in write-ahead-log mode.

Every measurement is committed (and fsynced: ``synchronous=FULL``) before `record` returns,
so the controller asks for the next move only once the last spectrum is on disk.

Tables:
- ``metadata(key, value)``: JSON values: ``config`` (resolved), ``config_text`` (verbatim),
  ``instrument`` (its description), ``versions``.
- ``arrays(name, dtype, shape, data)``: named arrays, e.g. ``overview`` (rows, cols).
- ``measurements``: one row per spectrum, in order; ``spectrum`` is the raw little-endian
  bytes of a float32 array of the instrument's channel count.
"""

from __future__ import annotations

import json
import math
import sqlite3
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA = """
CREATE TABLE IF NOT EXISTS metadata (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS arrays (
    name TEXT PRIMARY KEY, dtype TEXT NOT NULL, shape TEXT NOT NULL, data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS measurements (
    seq INTEGER PRIMARY KEY,          -- 0, 1, 2... in the order measured
    kind TEXT NOT NULL,               -- 'seed' (random start) or 'policy'
    candidate INTEGER NOT NULL,       -- index into the candidate grid
    x REAL NOT NULL, y REAL NOT NULL, -- position asked for, overview pixels
    x_read REAL NOT NULL, y_read REAL NOT NULL,  -- position reported at acquisition
    dwell_s REAL NOT NULL,            -- actual dwell
    spectrum BLOB NOT NULL,           -- float32 little-endian
    scalar REAL,                      -- the scalarizer's value; NULL when not finite
    acquisition_value REAL,           -- the policy's value at this point (NULL for seeds)
    predicted_mean REAL, predicted_std REAL,     -- the model's prediction before measuring
    t_decided REAL NOT NULL,          -- Unix seconds: decision made
    t_acquired REAL NOT NULL,         -- Unix seconds: instrument's end of exposure
    decision_latency_s REAL NOT NULL  -- fit + choose, seconds
);
"""


@dataclass(frozen=True)
class Measurement:
    """One row of ``measurements``; ``spectrum`` has shape (channels,)."""

    seq: int
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


class Journal:
    """Open (or create) the journal at ``path``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db = sqlite3.connect(self.path, isolation_level=None)  # we commit explicitly
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ------------------------------------------------------------------------------

    def set_metadata(self, key: str, value: Any) -> None:
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO metadata VALUES (?, ?)", (key, json.dumps(value))
            )

    def set_array(self, name: str, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array)
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO arrays VALUES (?, ?, ?, ?)",
                (name, array.dtype.str, json.dumps(array.shape), array.tobytes()),
            )

    def record(self, m: Measurement) -> None:
        """Write one measurement and commit it to disk before returning."""
        row = list(astuple(m))
        row[_SPECTRUM_AT] = np.asarray(m.spectrum, "<f4").tobytes()
        row[_SCALAR_AT] = m.scalar if math.isfinite(m.scalar) else None  # SQLite has no NaN
        with self._db:
            self._db.execute(f"INSERT INTO measurements VALUES ({', '.join('?' * len(row))})", row)

    # -- reading ------------------------------------------------------------------------------

    def metadata(self, key: str) -> Any:
        row = self._db.execute("SELECT value FROM metadata WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise KeyError(key)
        return json.loads(row[0])

    def array(self, name: str) -> np.ndarray:
        row = self._db.execute(
            "SELECT dtype, shape, data FROM arrays WHERE name = ?", (name,)
        ).fetchone()
        if row is None:
            raise KeyError(name)
        return np.frombuffer(row[2], dtype=row[0]).reshape(json.loads(row[1]))

    def measurements(self) -> list[Measurement]:
        rows = self._db.execute("SELECT * FROM measurements ORDER BY seq").fetchall()
        out = []
        for row in rows:
            row = list(row)
            row[_SPECTRUM_AT] = np.frombuffer(row[_SPECTRUM_AT], dtype="<f4")
            row[_SCALAR_AT] = math.nan if row[_SCALAR_AT] is None else row[_SCALAR_AT]
            out.append(Measurement(*row))
        return out


_SPECTRUM_AT = [f.name for f in fields(Measurement)].index("spectrum")
_SCALAR_AT = [f.name for f in fields(Measurement)].index("scalar")
