"""Floor 2, jobs: training (in rooms), prediction, explanation, evaluation, site adaptation."""
