"""``taxoclip report``: one self-contained HTML file from run, eval, curation and analysis dirs."""

from .html import ReportInputs, build_report, detect_inputs, write_report

__all__ = ["ReportInputs", "build_report", "detect_inputs", "write_report"]
