"""The training engine: the loop (`loop.train`), and beside it building, resume, one step,
evaluation and weight averaging."""
