"""Renderings of results for people: charts and pages built from model values."""
