"""foldwise training workflow: one module per DVC stage (download, prepare, train, ensemble, export, submit)."""
