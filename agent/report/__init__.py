"""Drill reports: the evidence an auditor asks for after a DR drill, from the store alone.

``build_report(store, op_id) -> DrillReport`` reads the facts (:mod:`agent.report.facts`, where
the achieved recovery time is defined); ``render_html(report)`` and ``render_csv(report)``
(:mod:`agent.report.render`, where the CSV columns are documented) write them out. Used by
``failover-agent report`` and the API's ``GET /v1/operations/{id}/report``.
"""

from agent.report.facts import RECOVERY_DEFINITION, DrillReport, build_report
from agent.report.render import CONTENT_SECURITY_POLICY, CSV_COLUMNS, render_csv, render_html

__all__ = ["CONTENT_SECURITY_POLICY", "CSV_COLUMNS", "RECOVERY_DEFINITION", "DrillReport", "build_report",
           "render_csv", "render_html"]
