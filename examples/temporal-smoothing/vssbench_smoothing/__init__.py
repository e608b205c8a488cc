"""An example vssbench method in its own package (docs/your-method.md)."""
