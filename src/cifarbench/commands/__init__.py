"""The commands a user runs (`cifarbench ...`): the Hydra training entry point, `models`, `report`,
`predict` and `inspect`, and their argument parsing. No library module imports this package."""
