"""Speed benchmarks; their measured figures are in bench/RESULTS.md."""
