"""Process-level plumbing every layer above relies on: environment setup, file locks,
signal and server lifecycle, and distributed ranks."""
