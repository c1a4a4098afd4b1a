"""User commands: scoring, curves, the demo, the diffusers export, the README model table, the classifier."""
