"""Core: typed config, registries, artifact paths, provenance, console set-up; imports no other layer of pipeline."""
