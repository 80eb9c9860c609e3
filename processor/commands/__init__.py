"""Thin command handlers behind ``hl7-processor``: parse nothing, wire shells to the core.

Each handler takes the parsed ``argparse.Namespace`` and returns an exit status.
"""
