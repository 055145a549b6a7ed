"""The mutation gate (see gate.py): promises broken on purpose, each of which must turn its tests red."""
