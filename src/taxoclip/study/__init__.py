"""Studies that combine the stages: ``taxoclip study scaling`` (data-size scaling)."""

from .scaling import ScalingConfig, ScalingResult, format_table, run_scaling

__all__ = ["ScalingConfig", "ScalingResult", "format_table", "run_scaling"]
