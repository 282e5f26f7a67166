"""Transfer evaluation: features, linear probe, few-shot, kNN, analyses, reports."""
