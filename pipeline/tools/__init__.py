"""Tools: commands that are not stages (init, preset, compare, submissions)."""
