"""Geospatial I/O for scene inference: raster pairs, tile grid, blending, streaming COG writer, polygons."""
