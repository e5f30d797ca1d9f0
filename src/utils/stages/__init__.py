"""The work of each data-construction stage, as functions over records; `src/dsc/` holds their CLIs."""
