"""Exports of the audit log: CSV and JSON Lines streamed from COPY, and the PDF report."""
