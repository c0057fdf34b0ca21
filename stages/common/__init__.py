"""Helpers shared by every stage: checkpoint schemas, strict loading, the built-in random weights, conditionals."""
