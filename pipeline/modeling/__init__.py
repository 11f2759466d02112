"""Modeling: our networks, model creation and loading, TTA views, inference, the ensemble module."""
