"""Accuracy-aware, device-aware search for the best artifact (``edgeopt optimize``).

goals (bounds + priority) · space (what is tried, in which order) · meter (a recipe -> a
measured, judged record) · record (candidates, probes) · journal (records on disk) ·
pareto (front, choice, closest misses) · events (progress, typed) · loop (the search itself) ·
outcome (what it found) · building and executor (where candidates are built: here, or on a Ray
cluster with ``ray_executor``). The budget's deadline is ``edgeopt.core.deadline``.
Recipes and the builder live in ``edgeopt.pipeline``.
"""

from edgeopt.agent.client import AgentTarget
from edgeopt.search.goals import Goals, Violation, parse_duration
from edgeopt.search.executor import ClusterConfig
from edgeopt.search.loop import Search, SearchConfig
from edgeopt.search.outcome import SearchOutcome
from edgeopt.search.candidate import Candidate
from edgeopt.search.space import SearchSpace

__all__ = ["AgentTarget", "Candidate", "ClusterConfig", "Goals", "Search", "SearchConfig", "SearchOutcome",
           "SearchSpace", "Violation", "parse_duration"]
