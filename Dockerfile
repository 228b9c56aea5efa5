# The rollguard image: the CLI, the worker and the client library.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md ./
COPY rollguard ./rollguard
RUN pip install --no-cache-dir .
COPY examples ./examples
ENTRYPOINT []
CMD ["rollguard", "--help"]
