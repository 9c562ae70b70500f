"""Validation reports: the data model (JSON with a schema version) and its renderings."""

from validator.report.model import SCHEMA_VERSION, Report, exit_code_for, load_report  # noqa: F401
