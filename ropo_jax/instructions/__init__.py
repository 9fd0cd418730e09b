"""The verifiable-instructions benchmark on a real model (docs/method.md §4.4)."""
