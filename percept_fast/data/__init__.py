"""Data that ships with percept_fast: the builder of the embedded default 2AFC/JND set."""
