"""Everything about checkpoint files: manifest, atomic save, discovery for `auto`, safe loading, export."""
