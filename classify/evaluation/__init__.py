"""How well a model did: one :class:`~.evaluation.Evaluation` per model (:mod:`.evaluation`),
the run's :class:`~.results.ModelResult` (:mod:`.results`), and saved runs side by side
(:mod:`.comparison`)."""
