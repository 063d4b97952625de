"""Evals: versioned eval sets, results and pass rates, retirement, the release gate, exports."""
