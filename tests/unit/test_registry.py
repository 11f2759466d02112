"""Registries (pipeline/core/registry.py): adding, looking up and checking names, the one-line errors,
and that the real registries hold exactly what the params sections accept."""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pytest

from pipeline.core.config import build
from pipeline.core.registry import Registry
from pipeline.data import layouts
from pipeline.data.layouts import LAYOUTS
from pipeline.data.prepare import PrepareParams
from pipeline.evaluation.ensemble import COMBINE, METHODS
from pipeline.evaluation.metrics import METRICS
from pipeline.modeling import nets
from pipeline.modeling.ensemble import EnsembleParams
from pipeline.modeling.nets import OWN_MODELS
from pipeline.modeling.tta import VIEWS
from pipeline.training.params import TrainParams
from serve.errors import UserError


def _colours() -> Registry[int]:
    reg: Registry[int] = Registry("colour")
    reg.add("red", 1)
    reg.add("green", 2)
    reg.add("blue", 3)
    return reg


def test_add_returns_the_item_and_keeps_the_order_of_adding() -> None:
    reg: Registry[int] = Registry("colour")
    assert reg.add("red", 1) == 1
    reg.add("blue", 3)
    reg.add("green", 2)
    assert reg.names() == ("red", "blue", "green")
    assert list(reg) == ["red", "blue", "green"]
    assert len(reg) == 3
    assert reg["blue"] == 3
    assert "green" in reg and "yellow" not in reg
    assert dict(reg.items()) == {"red": 1, "blue": 3, "green": 2}
    assert list(reg.values()) == [1, 3, 2]


def test_register_uses_the_given_name_or_the_function_name() -> None:
    reg: Registry = Registry("view")

    @reg.register("flipped")
    def hflip(x: int) -> int:
        return -x

    @reg.register()
    def identity(x: int) -> int:
        return x

    assert reg.names() == ("flipped", "identity")
    assert reg["flipped"] is hflip and hflip(2) == -2  # the decorator returns the function itself
    assert reg.lookup("identity") is identity


def test_a_name_registered_twice_is_refused_naming_the_family() -> None:
    reg = _colours()
    with pytest.raises(ValueError, match="colour 'red' is registered twice"):
        reg.add("red", 9)
    assert reg["red"] == 1  # the first one is kept

    with pytest.raises(ValueError, match="colour 'blue' is registered twice"):
        @reg.register()
        def blue() -> None: ...


def test_get_an_unknown_name_is_one_line_listing_the_known_names() -> None:
    reg = _colours()
    with pytest.raises(UserError) as exc:
        reg.lookup("yellow")
    assert str(exc.value) == "unknown colour 'yellow' (known: red, green, blue)"
    with pytest.raises(UserError) as exc:
        reg.lookup("yellow", where="params.yaml: paint.colour")
    assert str(exc.value) == "params.yaml: paint.colour: unknown colour 'yellow' (known: red, green, blue)"
    assert "\n" not in str(exc.value)


def test_getitem_of_an_unknown_name_is_a_key_error_for_callers_that_already_checked() -> None:
    with pytest.raises(KeyError):
        _colours()["yellow"]


COLOURS = _colours()


@dataclass
class PaintParams:
    colour: str = "red"

    def validate(self, err) -> None:
        COLOURS.check(self.colour, err, "colour", also=("auto",))


def test_check_through_a_params_validate_names_the_key_and_every_allowed_name() -> None:
    assert build(PaintParams, {"colour": "blue"}, "paint").colour == "blue"
    assert build(PaintParams, {"colour": "auto"}, "paint").colour == "auto"  # one of `also`
    with pytest.raises(UserError) as exc:
        build(PaintParams, {"colour": "yellow"}, "paint")
    assert str(exc.value) == "params.yaml: paint.colour: must be one of auto, red, green, blue, got 'yellow'"


def test_check_passes_the_key_to_err_and_raises_what_it_returns() -> None:
    seen = []

    def err(msg: str, key: str | None = None) -> UserError:
        seen.append((msg, key))
        return UserError(msg)

    COLOURS.check("green", err, "colour")
    assert seen == []
    with pytest.raises(UserError, match=r"^must be one of red, green, blue, got 'auto'$"):
        COLOURS.check("auto", err, "colour")  # `also` is empty: auto is not allowed here
    assert seen == [("must be one of red, green, blue, got 'auto'", "colour")]


# --- the real registries hold what the params accept -------------------------------------------


def test_metrics_hold_the_documented_names_and_prepare_accepts_each_of_them() -> None:
    assert METRICS.names() == ("accuracy", "log_loss", "roc_auc", "f1_macro", "qwk")
    for name in ("auto", *METRICS):
        assert build(PrepareParams, {"metric": name}, "prepare").metric == name
    with pytest.raises(UserError) as exc:
        build(PrepareParams, {"metric": "rmse"}, "prepare")
    assert str(exc.value) == f"params.yaml: prepare.metric: must be one of auto, {', '.join(METRICS)}, got 'rmse'"


def test_layouts_hold_the_readers_of_the_docstring_and_prepare_accepts_each_of_them() -> None:
    documented = re.findall(r"^  (\w+) {2,}", layouts.__doc__, flags=re.M)
    assert LAYOUTS.names() == tuple(documented) == ("pixel_csv", "labels_csv", "class_folders")
    assert all(callable(reader) for reader in LAYOUTS.values())
    for name in ("auto", *LAYOUTS):
        assert build(PrepareParams, {"layout": name}, "prepare").layout == name
    with pytest.raises(UserError, match=r"prepare\.layout: must be one of auto, pixel_csv, labels_csv, class_folders, "
                                         r"got 'parquet'$"):
        build(PrepareParams, {"layout": "parquet"}, "prepare")


def test_ensemble_methods_are_what_ensemble_methods_accepts_and_each_fits_a_combine_rule() -> None:
    assert METHODS.names() == ("mean_prob", "mean_logit", "weighted")
    assert COMBINE.names() == ("mean_prob", "mean_logit")
    assert build(EnsembleParams, {"methods": list(METHODS)}, "ensemble").methods == list(METHODS)
    with pytest.raises(UserError) as exc:
        build(EnsembleParams, {"methods": ["mean_prob", "median"]}, "ensemble")
    assert str(exc.value) == (
        "params.yaml: ensemble.methods[1]: unknown method 'median' (mean_prob, mean_logit, weighted)")
    logits = np.array([[[2.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 3.0]]])  # [views, rows, classes]
    for name, fit in METHODS.items():
        rule, weights = fit(logits, np.array([0, 1]))
        assert rule in COMBINE, name
        assert weights.shape == (2,) and np.isclose(weights.sum(), 1.0)


def test_views_start_with_none_and_ensemble_tta_accepts_every_other_view() -> None:
    assert VIEWS.names()[0] == "none"
    others = [v for v in VIEWS if v != "none"]
    assert {"hflip", "vflip", "left1", "right1", "up1", "down1"} <= set(others)
    assert build(EnsembleParams, {"tta": others}, "ensemble").tta == others
    assert set(EnsembleParams().tta) <= set(others)  # the default views are registered
    with pytest.raises(UserError) as exc:
        build(EnsembleParams, {"tta": ["hflip", "none"]}, "ensemble")  # the plain view is never listed
    assert str(exc.value) == f"params.yaml: ensemble.tta[1]: unknown view 'none' (views: {', '.join(others)})"


def test_own_models_are_the_documented_networks_under_their_function_names() -> None:
    documented = re.findall(r"`(foldwise_\w+)`", nets.__doc__)
    assert set(OWN_MODELS) == set(documented)
    for name, entry_point in OWN_MODELS.items():
        assert entry_point.__name__ == name  # what register_in_timm hands to timm under its __name__
    assert TrainParams().model in OWN_MODELS  # the shipped model needs no timm lookup
