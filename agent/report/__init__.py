"""Presenting results: terminal rows (console), the HTML/Markdown/JSON report
(build), its plots, and the regression gate's tables and JUnit output.
"""
