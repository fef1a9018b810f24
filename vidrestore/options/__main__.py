"""``python -m vidrestore.options`` prints the settings table for the README."""

from vidrestore.options.flags import markdown_table

print(markdown_table())
