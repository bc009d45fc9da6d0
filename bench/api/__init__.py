"""The API benchmark (issue 4): a seeded plant, loaded by COPY, measured over HTTP."""
