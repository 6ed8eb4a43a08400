"""Differential over-the-air updates, host side: packages, deltas, the link and the sender."""
