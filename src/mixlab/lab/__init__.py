"""The mixlab benchmark lab: datasets, models, trainer, grid runner and reports.

The lab imports the core (`mixlab`); the core never imports the lab.
"""
