"""Rank-0 metrics to stdout, ``log.txt``, ``metrics.csv`` and TensorBoard; other ranks log nothing."""

import csv
from pathlib import Path


class RunLogger:
    def __init__(self, run_dir: Path, enabled: bool):
        self.enabled = enabled
        self.run_dir = run_dir
        self._writer = self._csv = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self._text = open(run_dir / "log.txt", "a", buffering=1)
            self._writer = SummaryWriter(str(run_dir / "tensorboard"))

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
