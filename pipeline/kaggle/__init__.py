"""foldwise and Kaggle: the client, downloads, file submissions and the code-competition path.

    foldwise kaggle package     # the model as a Kaggle dataset (ONNX graph, serve wheel, offline wheels)
    foldwise kaggle notebook    # the offline inference notebook that reads /kaggle/input and writes submission.csv
    foldwise kaggle push        # push the notebook, wait for its run, submit it, record the score

  client.py       the real `kaggle` client: credentials, one-line errors, bounded retries, redaction
  params.py       params.yaml `submit`
  download.py     a competition's or a dataset's files (the download stage, `foldwise init SLUG`)
  submissions.py  list, find our own (sha256 tag), upload a file once, poll for the score
  history.py      submissions/history.json: file hash -> OOF and public scores
  wheels.py       serve/ as a wheel; dependency wheels for an offline install
  package.py      the dataset folder (dataset-metadata.json, manifest) and its create / version upload;
                  the graph it holds: pipeline/export/choice.py
  notebook.py     the notebook (nbformat); its cells are in cells.py
  push.py         kernel-metadata.json, kernels push, status polling, output and log, code submission
  code.py         `submit.mode: code`: the three steps above as the `submit` stage runs them

Nothing is uploaded, pushed or submitted twice: every artefact carries a `sha256:` tag of its
content (the dataset's description and version notes, the notebook's first cell, the submission
message) and Kaggle's own lists are checked for it first.
"""
