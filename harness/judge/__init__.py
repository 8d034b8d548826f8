"""Judging: scenarios (expected exchanges as data), the capture's dissection, the matcher."""
