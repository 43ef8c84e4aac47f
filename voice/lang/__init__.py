"""The phrase tables: one TOML file per language (read by :mod:`voice.phrasebook`)."""
