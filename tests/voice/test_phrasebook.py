"""The phrase tables: every language has every key, and the tables are checked when loaded."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import pytest

from routing.directory import _LANGUAGES as AGENT_LANGUAGES
from routing.directory import DEFAULT_ANNOUNCEMENT, DEFAULT_GREETING
from voice.announcement import check_announcement
from voice.errors import PhraseTableError
from voice.phrasebook import LANGUAGES, SAY_KEYS, TABLES, load, phrases

REQUIRED_LANGUAGES = {"en", "fr", "de", "es", "it", "nl"}


def keys(table: dict[str, object], prefix: str = "") -> set[str]:
    """Every key path of ``table`` (tables nested with dots), countries aside."""
    found: set[str] = set()
    for key, value in table.items():
        path = f"{prefix}{key}"
        if key == "countries":
            continue
        found.add(path)
        if isinstance(value, dict):
            found |= keys(value, f"{path}.")
    return found


def test_the_languages_of_the_issue_and_every_agent_language_have_tables() -> None:
    assert REQUIRED_LANGUAGES <= LANGUAGES and AGENT_LANGUAGES <= LANGUAGES


@pytest.mark.parametrize("path", sorted(TABLES.glob("*.toml")), ids=lambda p: p.stem)
def test_every_table_has_exactly_the_keys_of_the_english_one(path: Path) -> None:
    english = keys(tomllib.loads((TABLES / "en.toml").read_text(encoding="utf-8")))
    table = keys(tomllib.loads(path.read_text(encoding="utf-8")))
    assert table == english, (english - table, table - english)
    assert {f"say.{k}" for k in SAY_KEYS} <= table


@pytest.mark.parametrize("language", sorted(LANGUAGES))
def test_every_default_announcement_says_what_it_must(language: str) -> None:
    table = phrases(language)
    for text in (table.say.announcement, *table.countries.values()):
        check_announcement(text, language)


def test_english_is_what_it_was() -> None:
    say = phrases("en").say
    assert say.announcement == DEFAULT_ANNOUNCEMENT and say.greeting == DEFAULT_GREETING
    assert say.farewell == "Thank you for calling. Goodbye."
    assert say.filler == "One moment, please."


def copy_tables(tmp_path: Path) -> Path:
    for path in TABLES.glob("*.toml"):
        shutil.copy(path, tmp_path / path.name)
    return tmp_path


def test_a_table_missing_a_key_is_refused_naming_the_file_and_the_key(tmp_path: Path) -> None:
    tables = copy_tables(tmp_path)
    fr = tables / "fr.toml"
    fr.write_text(
        "\n".join(line for line in fr.read_text().splitlines() if not line.startswith("farewell")),
        encoding="utf-8",
    )
    with pytest.raises(PhraseTableError, match=r"fr\.toml: say\.farewell is missing"):
        load(tables)


def test_a_carrier_locale_that_is_not_a_language_tag_is_refused(tmp_path: Path) -> None:
    tables = copy_tables(tmp_path)
    it = tables / "it.toml"
    it.write_text(it.read_text().replace('locale = "it-IT"', 'locale = "it_IT"'), encoding="utf-8")
    with pytest.raises(PhraseTableError, match=r"it\.toml: say\.locale must be a language tag"):
        load(tables)


def test_a_table_missing_a_detector_is_refused(tmp_path: Path) -> None:
    tables = copy_tables(tmp_path)
    de = tables / "de.toml"
    de.write_text(de.read_text().replace("goodbye = ", "good_bye = "), encoding="utf-8")
    with pytest.raises(PhraseTableError, match=r"de\.toml: listen\.goodbye is missing"):
        load(tables)


def test_a_bad_pattern_is_refused_naming_its_key(tmp_path: Path) -> None:
    tables = copy_tables(tmp_path)
    nl = tables / "nl.toml"
    nl.write_text(nl.read_text().replace("'tot ziens'", "'tot (ziens'"), encoding="utf-8")
    with pytest.raises(PhraseTableError, match=r"nl\.toml: listen\.goodbye is not a valid"):
        load(tables)


def test_a_default_announcement_that_lacks_a_part_is_refused(tmp_path: Path) -> None:
    tables = copy_tables(tmp_path)
    it = tables / "it.toml"
    it.write_text(it.read_text().replace("può essere registrata", "è gratuita"), encoding="utf-8")
    with pytest.raises(PhraseTableError, match=r"it\.toml: say\.announcement lacks"):
        load(tables)


def test_a_regional_tag_uses_its_language_and_an_unknown_one_english() -> None:
    assert phrases("fr-CA").say.farewell == phrases("fr").say.farewell
    assert phrases("xx").say.farewell == phrases("en").say.farewell
