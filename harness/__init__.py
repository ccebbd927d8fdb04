"""Test and benchmark harness: real server processes and (later) a weak-network proxy.

Used by the end-to-end tests, the browser tests and ``make bench``; never by the product.
"""
