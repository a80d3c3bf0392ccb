"""`ttb reproduce`: published setups, trained through the sweep engine, measured beside the papers'
numbers (``core``: what a reproduction is; one module per paper; ``registry``: the table;
``report``: the page)."""
