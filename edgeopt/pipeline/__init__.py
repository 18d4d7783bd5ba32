"""From a model to artifacts: recipes (passes + an export, hashed), the builder that runs
them, and the multi-backend benchmark. The CLI, the Python API and the search all build
through here."""
