"""Stage 1's settings are declared once (extract.settings.ExtractSettings): the keywords of
extract_features, the options of python -m extract and the docs' table all come from it."""

from __future__ import annotations

import argparse
import inspect
from dataclasses import dataclass, field, fields

import pytest

from extract import SettingsError, extract_features
from extract.__main__ import build_parser
from extract.layouts import registered_layout
from extract.layouts.class_per_folder import ClassPerFolder
from extract.options import add_arguments_from, flags_of, keywords_from, option, option_table_of, whole
from extract.ray_engine import DEFAULT_SHARD_SIZE
from extract.settings import RAY_GROUP, ExtractSettings, keywords_of, option_table

NOT_SETTINGS = {"dataset"}  # what the run reads, given positionally
#: The command line's own options, not keywords: the actions, and the dataset.
NOT_KEYWORDS = {"help", "list_backbones", "verify", "add_checksums", "dataset"}

BUILT_IN_LAYOUTS = ["class-per-folder", "split-folders", "manifest"]


def test_every_keyword_of_extract_features_is_a_declared_setting_with_its_default():
    parameters = inspect.signature(extract_features).parameters
    declared = {f.name: f.default for f in fields(ExtractSettings)}
    keywords = {name: p.default for name, p in parameters.items() if name not in NOT_SETTINGS}
    assert keywords == declared
    assert all(p.kind is p.KEYWORD_ONLY for name, p in parameters.items() if name not in NOT_SETTINGS)


def test_every_declared_setting_is_an_option_with_its_flags_and_default():
    parser = build_parser()
    options = {action.dest: action for action in parser._actions}
    assert set(options) - NOT_KEYWORDS == {f.name for f in fields(ExtractSettings)}
    for setting in fields(ExtractSettings):
        action = options[setting.name]
        assert tuple(action.option_strings) == flags_of(setting)
        assert action.default == setting.default
    ray = next(group for group in parser._action_groups if group.title == RAY_GROUP)
    assert {action.dest for action in ray._group_actions} == {
        "engine", "ray_address", "workers", "cpus_per_worker", "shard_size", "merge"}


def test_parsed_options_are_the_keywords():
    args = build_parser().parse_args(["--dataset", "d", "--layer", "fc1", "fc2", "-q", "--exclude-class",
                                      "--batch-size", "8", "--cpus-per-worker", "2", "-o", "x.hdf5"])
    keywords = keywords_of(args)
    assert set(keywords) == {f.name for f in fields(ExtractSettings)}
    assert keywords["layers"] == ["fc1", "fc2"] and keywords["exclude_classes"] == []
    assert (keywords["progress"], keywords["batch_size"], keywords["cpus_per_worker"]) == (False, 8, 2.0)
    assert keywords["output"] == "x.hdf5" and keywords["shard_size"] == DEFAULT_SHARD_SIZE
    assert ExtractSettings(**keywords).layers == ("fc1", "fc2")
    defaults = keywords_of(build_parser().parse_args(["--dataset", "d"]))
    assert ExtractSettings(**defaults) == ExtractSettings()


def test_the_docs_table_has_a_row_per_setting():
    rows = option_table().splitlines()[2:]
    assert [row.split(" | ")[1] for row in rows] == [f"`{f.name}`" for f in fields(ExtractSettings)]
    quiet = next(row for row in rows if "`progress`" in row)
    assert quiet.startswith("| `--quiet`, `-q` (`False`) | `progress` | `True` | no progress bar")
    assert "class-per-folder (a folder): one sub-folder of images per class" in rows[0]


def test_choices_and_help_are_those_registered_when_the_parser_is_made():
    class Again(ClassPerFolder):
        name, description = "again", "the same once more"

    with registered_layout(Again()):
        layout = next(a for a in build_parser()._actions if a.dest == "layout")
        assert list(layout.choices) == [*BUILT_IN_LAYOUTS, "again"] and "the same once more" in layout.help
        assert "again (a folder)" in option_table()
    layout = next(a for a in build_parser()._actions if a.dest == "layout")
    assert list(layout.choices) == BUILT_IN_LAYOUTS


@pytest.mark.parametrize("keywords, message", [
    ({"batch_size": 0}, "batch_size (--batch-size) must be a whole number of at least 1, got 0"),
    ({"image_size": 16}, "image_size (--image-size) must be at least 32 for vgg16, got 16"),
    ({"layers": []}, "layers (--layer) must be a list of layer names, got []"),
    ({"layout": "nope"}, "layout (--layout) must be one of class-per-folder, split-folders, manifest, got "
                         "'nope'"),
    ({"engine": "ray", "layers": ["a", "b"]}, "several layers (--layer) in one pass run on the local engine"),
    ({"dtype": "int8"}, "dtype (--dtype) must be one of float32, float16, got 'int8'"),
    ({"cpus_per_worker": 1.5},
     "cpus_per_worker (--cpus-per-worker): Ray reserves whole CPUs above 1, got 1.5"),
    ({"cpus_per_worker": 0}, "cpus_per_worker (--cpus-per-worker) must be more than 0, got 0"),
])
def test_making_the_settings_checks_them(keywords, message):
    with pytest.raises(SettingsError) as raised:
        ExtractSettings(**keywords)
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)


def test_extract_features_checks_through_the_settings(tmp_path):
    with pytest.raises(SettingsError, match=r"^buffer_size \(--buffer-size\) must be a whole number"):
        extract_features(tmp_path / "nowhere", buffer_size=0)


def test_paths_one_layer_and_no_shard_size_are_taken_as_the_command_line_gives_them(tmp_path):
    settings = ExtractSettings(backbone=tmp_path / "m.keras", preprocess="resnet", layers="embed",
                               shard_size=None)
    assert settings.backbone == str(tmp_path / "m.keras") and settings.layers == ("embed",)
    assert settings.shard_size == DEFAULT_SHARD_SIZE
    assert settings.keywords()["layers"] == ("embed",)


def test_the_generic_helpers_on_a_settings_class_of_their_own():
    @dataclass(frozen=True)
    class Settings:
        size: int = field(default=8, metadata=option("images per call", "--size", "-s", metavar="N",
                                                     text=whole, group="Sizes"))
        names: tuple[str, ...] = field(default=("a",), metadata=option("names | more", nargs="+"))
        hook: object = None  # a keyword only: no option

    parser = argparse.ArgumentParser()
    add_arguments_from(Settings, parser, groups={"Sizes": "how big"})
    args = parser.parse_args(["-s", "3", "--names", "x", "y"])
    assert keywords_from(Settings, args) == {"size": 3, "names": ["x", "y"]}
    assert keywords_from(Settings, parser.parse_args([])) == {"size": 8, "names": ["a"]}
    assert [g.description for g in parser._action_groups if g.title == "Sizes"] == ["how big"]
    assert option_table_of(Settings).splitlines()[2:] == [
        "| `--size`, `-s` | `size` | `8` | images per call |",
        "| `--names` | `names` | `a` | names \\| more |",
    ]
    with pytest.raises(SystemExit):
        parser.parse_args(["--size", "many"])
