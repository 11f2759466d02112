"""Stages: one thin module per DVC stage, run by dvc.yaml as `python -m pipeline.stages.<name>`."""
