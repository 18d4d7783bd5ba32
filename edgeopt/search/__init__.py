"""Accuracy-aware, device-aware search for the best artifact (``edgeopt optimize``).

goals (bounds + priority) · recipe (a candidate, hashed, TOML) · space (what is tried, in
which order) · builder (recipe -> model -> artifact) · meter (a recipe -> a measured record) ·
journal (finished candidates on disk) · pareto (front, choice, closest misses) · loop (the search itself).
"""

from edgeopt.search.goals import Goals, parse_duration
from edgeopt.search.loop import Search, SearchConfig, SearchOutcome
from edgeopt.search.recipe import Recipe, Step
from edgeopt.search.space import SearchSpace

__all__ = ["Goals", "Recipe", "Search", "SearchConfig", "SearchOutcome", "SearchSpace", "Step", "parse_duration"]
