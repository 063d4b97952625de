"""Online quality: the LLM judge, rubrics and their calibration, signal alerts, experiments, parity."""
