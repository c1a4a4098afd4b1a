"""Rank-0 metrics to stdout, ``log.txt``, ``metrics.csv`` and TensorBoard; other ranks log nothing."""

import csv
from pathlib import Path

from training.atomic import write_text_atomic


class RunLogger:
    """``start_step``: the step training starts from. Rows that a killed run logged after it (its last one perhaps
    cut short) are dropped, since this run logs those steps again."""

    def __init__(self, run_dir: Path, enabled: bool, start_step: int = 0):
        self.enabled = enabled
        self.run_dir = run_dir
        self._writer = self._csv = None
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
        """One CSV row (header written once per file), one TensorBoard scalar each, one text line."""
        if not self.enabled:
            return
        path = self.run_dir / "metrics.csv"
        new = not path.exists()
        with open(path, "a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(["step", *values])
            writer.writerow([step, *(f"{v:.6g}" for v in values.values())])
        for key, value in values.items():
            self._writer.add_scalar(key, value, step)
        self.info(f"step {step:07d} " + " ".join(f"{k}={v:.4g}" for k, v in values.items()))

    def close(self) -> None:
        if self.enabled:
            self._writer.close()
            self._text.close()
