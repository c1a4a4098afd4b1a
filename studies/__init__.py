"""One-off study drivers over one shared helper (studies/common.py); their results are under results/."""
