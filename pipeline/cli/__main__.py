"""python -m pipeline.cli ... (as the `foldwise` command)."""
from pipeline.cli import main

main()
