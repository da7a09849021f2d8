"""The results document of an evaluation (schema ``robustbench-augmix/results/1``) and its renderings:
JSON, the tidy per-cell CSV, and a rich table of the headline numbers. The leaderboard, ``--baseline`` and
the demo read results through :class:`Results`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from .._common import atomic_write, json_dump


class Results:
    """The outcome of :func:`evaluate`: ``results.data`` is the JSON document; ``results.outcomes`` the
    per-image outcomes per cell (not saved)."""

    def __init__(self, data: dict, outcomes: Mapping | None = None) -> None:
        self.data = data
        self.outcomes = outcomes
        self.path: Path | None = None  # where save() wrote it

    def __getitem__(self, key: str):
        return self.data[key]

    @property
    def aggregates(self) -> dict:
        return self.data["aggregates"]

    @classmethod
    def load(cls, path: str | Path) -> Results:
        return cls(json.loads(Path(path).read_text()))

    def cell_errors(self) -> dict[tuple[str, int], float]:
        """``{(corruption, severity): error}`` over the cells, ``("clean", 0)`` included."""
        return {(c["corruption"], int(c["severity"])): c["error"] for c in self.data["cells"]}

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (JSON) and the tidy per-cell CSV beside it, each atomically."""
        path = Path(path)
        json_dump(path, self.data)
        atomic_write(path.with_suffix(".csv"), lambda p: p.write_text(self.csv()))
        self.path = path
        return path

    def csv(self) -> str:
        import csv
        import io

        cols = ["model", "suite", "corruption", "severity", "n", "correct", "correct5", "error", "top5_error",
                "nll", "rms_calibration_error", "ece"]
        buf = io.StringIO()
        wr = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        wr.writeheader()
        for c in self.data["cells"]:
            wr.writerow({"model": self.data["model"]["id"], "suite": self.data["suite"]["id"],
                         **{k: c[k] for k in cols[2:]}})
        return buf.getvalue()

    def table(self):
        """A rich table of the headline numbers (percent)."""
        from rich.table import Table

        a, iv = self.data["aggregates"], self.data["intervals"]

        def pct(key, src=a):
            v = src.get(key)
            if v is None:
                return "-"
            s = f"{100 * v:.2f}"
            if key in iv:
                s += f"  [dim]({100 * iv[key][0]:.2f}-{100 * iv[key][1]:.2f})[/]"
            return s

        t = Table(title=f"{self.data['model']['id']} on {self.data['suite']['id']}"
                  + ("" if self.data["protocol"]["complete"] else "  [yellow](partial: not comparable)[/]"))
        t.add_column("metric")
        t.add_column("value (%), 95% CI")
        t.add_row("clean error", pct("clean_error"))
        t.add_row("mean corruption error", pct("mean_corruption_error"))
        if "mce" in a:
            t.add_row(f"mCE (vs {self.data['baseline']['name']})", pct("mce"))
        if "relative_mce" in a:
            t.add_row("relative mCE", pct("relative_mce"))
        t.add_row("RMS calibration error, clean", pct("clean_rms_calibration_error"))
        t.add_row("RMS calibration error, corrupted", pct("rms_calibration_error"))
        worst = sorted(a.get("corruption_error", {}).items(), key=lambda kv: -kv[1])[:3]
        if worst:
            t.add_row("worst corruptions", ", ".join(f"{c} {100 * e:.1f}" for c, e in worst))
        return t
