"""Pages people read: the demo (``demo``) and its index.html."""
