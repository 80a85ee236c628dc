"""Scientific pipelines: each a set of task types, workflow descriptors and reports."""
