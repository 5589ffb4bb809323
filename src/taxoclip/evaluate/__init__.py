"""Evaluate: BioCLIP 2's protocols, hierarchical metrics, the SynthToL and published suites.

``protocols`` and ``hierarchical`` are pure functions over features; ``suites`` runs them
on data with a model; ``runner`` is what ``taxoclip eval`` calls.
"""
