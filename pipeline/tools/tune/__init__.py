"""`foldwise tune`: an Optuna search over params.yaml `train`, judged on the folds its trials train
on and confirmed on folds no trial touched.

  pipeline/training/search_space.py   the `tune` section, its distributions and their checks
  search.py                           the study: storage, sampler, pruner, the objective
  confirm.py                          the confirmation and presets/tuned.yaml
  figures.py                          the report's tuning plots (Optuna's matplotlib visualizations)
  command.py                          all of it, in order (what the CLI calls)
"""
