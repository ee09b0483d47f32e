"""Stage 2 of featurebank: shallow classifiers grid-searched on a feature file.

Run it as ``python -m classify --features FILE``; ``models`` holds the registry of
classifiers, ``search`` the split and grid search, ``report`` the text and JSON reports.
"""
