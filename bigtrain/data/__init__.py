"""LightningDataModules: images and text, from built-in data that needs no download to the user's files."""
