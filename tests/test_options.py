"""RegistrationOptions: defaults, parsing of iteration lists, checks, argparse round trip."""

import argparse

import pytest

from napari_mireg.engine.metric import MutualInformation
from napari_mireg.options import (
    DEFAULTS,
    OPTIONS,
    OptionError,
    RegistrationOptions,
    add_arguments,
    from_arguments,
    parse_iterations,
)

BOUNDED = [option for option in OPTIONS if option.kind in ("int", "float")]


@pytest.mark.parametrize("text", ["40x20x10", "40,20,10", " 40 X 20, 10 ", [40, 20, 10]])
def test_iteration_lists_in_every_spelling_give_one_tuple(text):
    assert parse_iterations(text) == (40, 20, 10)


@pytest.mark.parametrize("text", ["", "forty", "40x-1", [], [40, 2.5], [-3]])
def test_bad_iteration_lists_name_the_option(text):
    with pytest.raises(OptionError) as caught:
        parse_iterations(text, "level_iters")
    assert caught.value.option == "level_iters"


def test_values_are_normalised_once():
    options = RegistrationOptions(bins="16", level_iters="5x3", step_length="0.5", threads=2)
    assert (options.bins, options.level_iters, options.step_length) == (16, (5, 3), 0.5)
    assert isinstance(options.step_length, float)
    assert DEFAULTS == RegistrationOptions.build({})


@pytest.mark.parametrize(
    "changes, option",
    [
        ({"bins": 3}, "bins"),
        ({"bins": True}, "bins"),
        ({"step_length": 0}, "step_length"),
        ({"update_sigma": float("nan")}, "update_sigma"),
        ({"threads": 0}, "threads"),
        ({"prealign": "elastic"}, "prealign"),
        ({"symmetric": "no"}, "symmetric"),
        ({"winsorize": (0.9, 0.1)}, "winsorize"),
        ({"winsorize": "0.01,1.5"}, "winsorize"),
        ({"winsorize": "low,high"}, "winsorize"),
        ({"metric": "cc"}, "metric"),
    ],
)
def test_bad_values_and_unknown_names_are_refused_by_name(changes, option):
    with pytest.raises(OptionError) as caught:
        RegistrationOptions.build(**changes)
    assert caught.value.option == option
    assert isinstance(caught.value, ValueError)


def test_build_layers_object_mapping_and_keywords():
    base = RegistrationOptions(bins=48)
    built = RegistrationOptions.build(base, level_iters=[4, 2])
    assert (built.bins, built.level_iters) == (48, (4, 2))
    assert RegistrationOptions.build({"bins": 20}, bins=24).bins == 24
    with pytest.raises(OptionError):
        base.replace(bins=2)  # replace checks again


def test_report_values_leave_out_the_thread_count():
    options = RegistrationOptions(level_iters=(4, 2), threads=3)
    assert options.as_dict()["level_iters"] == [4, 2]
    key = options.results_key()
    assert "threads" not in key
    assert key == RegistrationOptions(level_iters=(4, 2), threads=1).results_key()


def test_command_line_arguments_build_the_same_options_and_errors_name_the_flag():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert from_arguments(parser.parse_args([])) == DEFAULTS
    options = from_arguments(parser.parse_args(["--iterations", "6,3", "--bins", "24"]))
    assert options == RegistrationOptions(level_iters=(6, 3), bins=24)
    one_way = from_arguments(parser.parse_args(["--no-symmetric"]))
    assert one_way == RegistrationOptions(symmetric=False) and DEFAULTS.symmetric
    clipped = from_arguments(parser.parse_args(["--winsorize", "0.005,0.995"]))
    assert clipped.winsorize == (0.005, 0.995) and DEFAULTS.winsorize is None
    assert clipped.as_dict()["winsorize"] == [0.005, 0.995]  # as JSON reports keep it
    assert RegistrationOptions.build(clipped.as_dict()) == clipped
    with pytest.raises(OptionError) as caught:
        from_arguments(parser.parse_args(["--step-length", "-1"]))
    assert caught.value.option == "--step-length"


@pytest.mark.parametrize("option", BOUNDED, ids=[option.name for option in BOUNDED])
def test_the_api_and_the_command_line_keep_the_bounds_of_the_table(option):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    past = 1 if option.kind == "int" else 1e-6
    inside = [option.high] + ([] if option.low_open else [option.low])
    outside = [option.high + past, option.low - past] + ([option.low] if option.low_open else [])
    for value in inside:
        assert getattr(RegistrationOptions.build({option.name: value}), option.name) == value
        parsed = from_arguments(parser.parse_args([f"{option.cli_flag}={value}"]))
        assert getattr(parsed, option.name) == value
    for value in outside:
        with pytest.raises(OptionError) as caught:
            RegistrationOptions.build({option.name: value})
        assert caught.value.option == option.name and f"{option.high:g}" in caught.value.problem
        with pytest.raises(OptionError) as caught:
            from_arguments(parser.parse_args([f"{option.cli_flag}={value}"]))
        assert caught.value.option == option.cli_flag


def test_the_metric_takes_the_bins_bounds_of_the_table():
    bins = next(option for option in OPTIONS if option.name == "bins")
    assert (bins.low, bins.high) == (5, 1024)
    assert MutualInformation(bins=bins.low).bins == 5
    assert MutualInformation(bins=bins.high).bins == 1024
    for outside in (bins.low - 1, bins.high + 1):
        with pytest.raises(ValueError, match="bins"):
            MutualInformation(bins=outside)


def test_the_table_writes_the_docs_of_every_option():
    doc = RegistrationOptions.__doc__
    assert "bins : int" in doc and "5 to 1024" in doc and "MI[fixed,moving,1,32]" in doc
    assert 'histogram : {"partial-volume", "parzen"}' in doc
    assert "winsorize : tuple of 2 float or None" in doc and "Default: none." in doc
    assert all(f"{option.name} : " in doc for option in OPTIONS)


def test_only_the_thread_count_is_left_out_of_the_results_key():
    changes_nothing = [option.name for option in OPTIONS if not option.affects_results]
    assert changes_nothing == ["threads"]
    assert set(DEFAULTS.results_key()) == {option.name for option in OPTIONS} - {"threads"}
