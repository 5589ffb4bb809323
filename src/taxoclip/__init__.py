"""taxoclip: the BioCLIP 2 system end to end — data, training, prediction, evaluation, analysis.

Importing the package is cheap (no torch): heavy modules load when a stage is used.
"""

__version__ = "0.1.0"
