"""Drop-in replacements for other libraries' APIs, built on w2v's own modules."""
