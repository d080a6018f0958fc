"""Small charts of results: ``bar_chart`` (matplotlib when installed, else a PNG drawn here)."""

from tskd_fast.plot.bar_chart import Bar, bar_chart

__all__ = ["Bar", "bar_chart"]
