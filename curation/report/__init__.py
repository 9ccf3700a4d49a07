"""`curate report`: a static HTML report of a finished output (funnel, score histograms with the
thresholds, sample grids, near-threshold rows, bias/diversity audit, cluster sizes, run config)."""

from curation.report.html import REPORT_NAME, write_report

__all__ = ["REPORT_NAME", "write_report"]
