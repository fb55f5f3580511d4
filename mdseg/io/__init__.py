"""Files in and out, with nothing geographic about them: opening rasters with one-line errors and reading bands
with their validity (`raster`), and all-or-nothing outputs (`atomic`)."""
