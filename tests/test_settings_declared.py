"""Stage 2's settings are declared once (classify.settings.TrainSettings): the keywords of
train_and_evaluate, the options of python -m classify and the docs' table all come from it."""

from __future__ import annotations

import inspect
from dataclasses import fields

import pytest

from classify import SettingsError, train_and_evaluate
from classify.__main__ import build_parser
from classify.settings import TrainSettings, option_table
from extract.options import flags_of

NOT_SETTINGS = {"features", "outputs", "on_result"}  # the file, and Python-only hooks


def test_every_keyword_of_train_and_evaluate_is_a_declared_setting_with_its_default():
    parameters = inspect.signature(train_and_evaluate).parameters
    declared = {f.name: f.default for f in fields(TrainSettings)}
    keywords = {name: p.default for name, p in parameters.items() if name not in NOT_SETTINGS}
    assert keywords == declared


def test_every_declared_setting_is_an_option_with_its_default():
    parser = build_parser()
    options = {action.dest: action for action in parser._actions}
    for setting in fields(TrainSettings):
        action = options[setting.name]
        assert tuple(action.option_strings) == flags_of(setting)
        default = setting.default
        assert action.default == (list(default) if isinstance(default, tuple) else default)
    parsed = parser.parse_args(["-f", "x.hdf5", "--test-size", "0.3", "-m", "rf", "xgb", "-vv"])
    assert (parsed.test_size, parsed.models, parsed.verbose) == (0.3, ["rf", "xgb"], 2)


def test_the_docs_table_has_a_row_per_setting():
    rows = option_table().splitlines()[2:]
    assert [row.split(" | ")[1] for row in rows] == [f"`{f.name}`" for f in fields(TrainSettings)]


@pytest.mark.parametrize("keywords, message", [
    ({"folds": 1}, "folds (--folds) must be at least 2, got 1"),
    ({"models": ["logreg", "nope"]}, "unknown model (--model) 'nope'"),
    ({"precision": "bf16"}, "precision (--precision) bf16 is for the models that train backbone layers"),
])
def test_making_the_settings_checks_them(keywords, message):
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TrainSettings(**keywords)
