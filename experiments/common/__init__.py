"""What every experiment shares: config reading and validators, devices and dtypes, seeds, atomic files.

Imports nothing of ``experiments``; everything above may import it.
"""
