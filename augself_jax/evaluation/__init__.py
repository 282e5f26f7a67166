"""Transfer evaluation. common.py is the protocol interface; each protocol (linear, fewshot,
knn, probe, sensitivity, ...) is the module that defines `PROTOCOL`, found by registry.py;
features.py extracts frozen features once per dataset for all of them; run.py is
evaluate.py's driver; reports.py writes and compares the results."""
