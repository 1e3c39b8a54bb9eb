"""The end-to-end demonstration behind ``teaclave-ma demo``."""
