"""The content-addressed stage cache under ``<paths.home>/cache``, and the commands that
inspect and repair it (`transferlab cache`, `transferlab doctor`)."""
