"""Process start and end (pipeline/core/console.py): run_stage's options from a function's signature,
run_or_exit's one `error:` line and exit code 2, and configure's log levels."""
from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from pipeline.core.console import QUIET_ENV, configure, quiet, run_or_exit, run_stage
from serve.errors import TooLarge, UserError


@pytest.fixture(autouse=True)
def _restore_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """configure() replaces the root logger's set-up and may set FOLDWISE_QUIET: put both back."""
    monkeypatch.setenv(QUIET_ENV, "")  # recorded as unset: removed again after the test
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    noisy = {name: logging.getLogger(name).level for name in ("torch", "PIL")}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, lvl in noisy.items():
        logging.getLogger(name).setLevel(lvl)


CALLS: list[dict] = []


def stage(fold: int, seed: int = 0, limit: int | None = None, fast: bool = False, max_rows: int = 100,
          tag: str = "x") -> None:
    """A stage for the tests: records its arguments."""
    CALLS.append({"fold": fold, "seed": seed, "limit": limit, "fast": fast, "max_rows": max_rows, "tag": tag})


def _run(argv: list[str]) -> dict:
    CALLS.clear()
    run_stage(stage, argv)
    assert len(CALLS) == 1
    return CALLS[0]


def test_run_stage_passes_defaults_for_options_not_given() -> None:
    assert _run(["--fold", "1"]) == {"fold": 1, "seed": 0, "limit": None, "fast": False, "max_rows": 100, "tag": "x"}


def test_run_stage_parses_ints_optional_ints_flags_and_strings() -> None:
    args = _run(["--fold", "2", "--seed", "7", "--limit", "30", "--fast", "--max-rows", "5", "--tag", "b"])
    assert args == {"fold": 2, "seed": 7, "limit": 30, "fast": True, "max_rows": 5, "tag": "b"}
    assert type(args["limit"]) is int and type(args["fold"]) is int


def test_run_stage_refuses_a_missing_required_option(capsys: pytest.CaptureFixture[str]) -> None:
    CALLS.clear()
    with pytest.raises(SystemExit) as exc:
        run_stage(stage, ["--seed", "1"])
    assert exc.value.code == 2
    assert "the following arguments are required: --fold" in capsys.readouterr().err
    assert CALLS == []


def test_run_stage_refuses_a_non_integer_for_an_int_option(capsys: pytest.CaptureFixture[str]) -> None:
    CALLS.clear()
    with pytest.raises(SystemExit) as exc:
        run_stage(stage, ["--fold", "one"])
    assert exc.value.code == 2
    assert "--fold: invalid int value: 'one'" in capsys.readouterr().err
    assert CALLS == []


def test_run_stage_ends_a_user_error_in_one_line_and_exit_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    def failing(fold: int) -> None:
        raise UserError(f"data/prepared/meta.json: fold {fold} is missing")

    with pytest.raises(SystemExit) as exc:
        run_stage(failing, ["--fold", "3"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == "error: data/prepared/meta.json: fold 3 is missing"


def test_run_or_exit_prints_one_error_line_on_stderr_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    def fail() -> None:
        raise UserError("params.yaml: train.lr: must be > 0, got -1")

    with pytest.raises(SystemExit) as exc:
        run_or_exit(fail)
    assert exc.value.code == 2
    out = capsys.readouterr()
    assert out.err == "error: params.yaml: train.lr: must be > 0, got -1\n"
    assert out.out == ""


def test_run_or_exit_treats_every_kind_of_user_error_alike(capsys: pytest.CaptureFixture[str]) -> None:
    def fail() -> None:
        raise TooLarge("big.png: 100000000 pixels (limit 89478485)")

    with pytest.raises(SystemExit) as exc:
        run_or_exit(fail)
    assert exc.value.code == 2
    assert capsys.readouterr().err == "error: big.png: 100000000 pixels (limit 89478485)\n"


def test_run_or_exit_returns_after_a_normal_call_and_lets_our_bugs_through(capsys: pytest.CaptureFixture[str]) -> None:
    done = []
    run_or_exit(lambda: done.append(1))
    assert done == [1] and capsys.readouterr().err == ""

    def bug() -> None:
        raise ValueError("a bug keeps its traceback")

    with pytest.raises(ValueError, match="a bug keeps its traceback"):
        run_or_exit(bug)


def test_run_or_exit_ends_an_interrupt_with_code_130(capsys: pytest.CaptureFixture[str]) -> None:
    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as exc:
        run_or_exit(interrupted)
    assert exc.value.code == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_configure_sets_info_by_default_and_debug_when_verbose() -> None:
    configure()
    assert logging.getLogger().level == logging.INFO
    assert logging.getLogger("torch").level == logging.WARNING  # chatty libraries stay quiet
    assert not quiet()
    configure(verbose=True)
    assert logging.getLogger().level == logging.DEBUG
    assert not quiet()


def test_configure_quiet_logs_warnings_only_and_turns_progress_bars_off() -> None:
    assert not quiet()
    configure(quiet=True)
    assert logging.getLogger().level == logging.WARNING
    assert quiet()
    configure(quiet=True, verbose=True)  # quiet wins
    assert logging.getLogger().level == logging.WARNING
