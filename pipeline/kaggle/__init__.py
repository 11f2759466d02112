"""foldwise and Kaggle: the client wrapper and the code-competition path.

    foldwise kaggle package     # the model as a Kaggle dataset (ONNX graph, serve wheel, offline wheels)
    foldwise kaggle notebook    # the offline inference notebook that reads /kaggle/input and writes submission.csv
    foldwise kaggle push        # push the notebook, wait for its run, submit it, record the score

  client.py    the real `kaggle` client: credentials, one-line errors, bounded retries, redaction
  graph.py     which exported graph goes to Kaggle (the fastest within 0.1 point of FP32's OOF score)
  wheels.py    serve/ as a wheel; dependency wheels for an offline install
  package.py   the dataset folder (dataset-metadata.json, manifest) and its create / version upload
  notebook.py  the notebook (nbformat); its cells are in cells.py
  push.py      kernel-metadata.json, kernels push, status polling, output and log, code submission
  code.py      `submit.mode: code`: the three steps above as the `submit` stage runs them

Nothing is uploaded, pushed or submitted twice: every artefact carries a `sha256:` tag of its
content (the dataset's description and version notes, the notebook's first cell, the submission
message) and Kaggle's own lists are checked for it first.
"""
