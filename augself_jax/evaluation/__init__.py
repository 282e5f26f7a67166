"""Transfer evaluation. common.py is the protocol interface and registry: each protocol
(linear, fewshot, knn, probe, sensitivity) is the module that defines `PROTOCOL`; features.py
extracts frozen features once per dataset for all of them; run.py is evaluate.py's driver;
reports.py writes and compares the results."""
