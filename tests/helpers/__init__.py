"""Helpers the tests share (projects, the CLI runner, emulators, competitions); no test file imports another."""
