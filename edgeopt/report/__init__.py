"""Presenting results: console tables (and, later, HTML reports with plots)."""
