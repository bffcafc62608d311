"""Publishing: a finished run to object storage (manifest last, latest.json moved by the gate),
and reading published runs back (the gallery)."""
