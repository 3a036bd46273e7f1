"""Helpers for ARCH's end-to-end tests: images, private daemons, runtime logs.

Plain modules without pytest dependencies, so tests/golden/capture.py can use them too.
"""
