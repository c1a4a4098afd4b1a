"""Rank-0 metrics to stdout, ``log.txt``, ``metrics.csv`` and TensorBoard; other ranks log nothing."""

import csv
from contextlib import nullcontext
from pathlib import Path

from training.atomic import write_text_atomic


class RunLogger:
    """``start_step``: the step training starts from. Rows that a killed run logged after it (its last one perhaps
    cut short) are dropped, since this run logs those steps again."""

    def __init__(self, run_dir: Path, enabled: bool, start_step: int = 0):
        self.enabled = enabled
        self.run_dir = run_dir
        self._writer = self._csv = None
        self._header: list[str] | None = None  # metrics.csv's columns, read once
        if enabled:
            self._drop_rows_after(start_step)
            from torch.utils.tensorboard import SummaryWriter

            self._text = open(run_dir / "log.txt", "a", buffering=1)
            self._writer = SummaryWriter(str(run_dir / "tensorboard"))

    def _drop_rows_after(self, step: int) -> None:
        path = self.run_dir / "metrics.csv"
        if not path.exists():
            return
        header, *rows = path.read_text().splitlines(keepends=True) or [""]
        kept = [r for r in rows if r.endswith("\n") and r.split(",")[0].isdigit() and int(r.split(",")[0]) <= step]
        if kept and header.endswith("\n"):
            write_text_atomic(path, header + "".join(kept))
        else:
            path.unlink()

    def info(self, message: str) -> None:
        if self.enabled:
            print(message, flush=True)
            self._text.write(message + "\n")

    def metrics(self, step: int, values: dict[str, float]) -> None:
        """One CSV row, one TensorBoard scalar each, one text line. The header is written with the file's first
        row; a row with a column the header lacks (an evaluation's score) widens it, and a row leaves the columns
        it does not have empty, so readers skip it there (tools/curves.py)."""
        if not self.enabled:
            return
        path = self.run_dir / "metrics.csv"
        if self._header is None:
            with open(path) if path.exists() else nullcontext(iter([""])) as f:
                self._header = [k for k in next(f, "").rstrip("\r\n").split(",") if k]
        header = self._header
        if new := [k for k in values if k not in header[1:]]:
            header = self._header = [*(header or ["step"]), *new]
            self._widen(path, header)
        with open(path, "a", newline="") as f:
            cells = {k: f"{v:.6g}" for k, v in values.items()}
            csv.writer(f).writerow([step, *(cells.get(k, "") for k in header[1:])])
        for key, value in values.items():
            self._writer.add_scalar(key, value, step)
        self.info(f"step {step:07d} " + " ".join(f"{k}={v:.4g}" for k, v in values.items()))

    def _widen(self, path: Path, header: list[str]) -> None:
        """Rewrite metrics.csv (atomically) under ``header``, its rows padded with empty cells."""
        rows = path.read_text().splitlines()[1:] if path.exists() else []
        pad = "," * (len(header) - 1 - (len(rows[0].split(",")) - 1 if rows else 0))
        lines = [",".join(header), *(r + pad for r in rows)]
        write_text_atomic(path, "".join(line + "\r\n" for line in lines))  # csv.writer's line ends

    def image(self, tag: str, image, step: int) -> None:
        """A uint8 HWC image to TensorBoard."""
        if self.enabled:
            self._writer.add_image(tag, image, step, dataformats="HWC")

    def close(self) -> None:
        if self.enabled:
            self._writer.close()
            self._text.close()
