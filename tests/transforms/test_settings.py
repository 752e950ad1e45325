"""Loading and validating settings: booleans are strict (a typo is an error, not a False)."""

from __future__ import annotations

import pytest

from transforms.settings import Settings, SettingsError, load_settings, parse_bool


@pytest.mark.parametrize("text", ["true", "TRUE", " yes ", "on", "1"])
def test_true_spellings(text: str) -> None:
    assert parse_bool(text) is True


@pytest.mark.parametrize("text", ["false", "False", "no", "OFF", "0"])
def test_false_spellings(text: str) -> None:
    assert parse_bool(text) is False


@pytest.mark.parametrize("text", ["ture", "", "2", "disabled", "none", "-1"])
def test_anything_else_is_an_error_not_false(text: str) -> None:
    with pytest.raises(SettingsError, match="not a boolean"):
        parse_bool(text)


def test_catalog_signals_is_on_by_default() -> None:
    assert Settings().core.catalog_signals is True


@pytest.mark.parametrize("value", ["false", "off", "0", "no"])
def test_catalog_signals_turned_off_from_the_command_line(value: str) -> None:
    settings = Settings().with_overrides([f"core.catalog_signals={value}"])
    assert settings.core.catalog_signals is False
    assert Settings().core.catalog_signals is True   # the defaults are not changed


def test_a_misspelt_catalog_signals_is_refused_on_every_path(tmp_path) -> None:
    with pytest.raises(SettingsError, match="catalog_signals"):
        Settings().with_overrides(["core.catalog_signals=flase"])
    with pytest.raises(SettingsError, match="catalog_signals"):
        load_settings(env={"PERSONALIZE_CORE__CATALOG_SIGNALS": "maybe"})
    toml = tmp_path / "s.toml"
    toml.write_text('[core]\ncatalog_signals = "nope"\n')
    with pytest.raises(SettingsError, match="catalog_signals"):
        load_settings(toml)


def test_catalog_signals_from_a_file_and_the_environment(tmp_path) -> None:
    toml = tmp_path / "s.toml"
    toml.write_text("[core]\ncatalog_signals = false\n")
    assert load_settings(toml).core.catalog_signals is False
    on = load_settings(toml, env={"PERSONALIZE_CORE__CATALOG_SIGNALS": "true"})
    assert on.core.catalog_signals is True
